// The sidebar (book contents) and page-contents toggles, at every width (issue 20).
// pydata-sphinx-theme 0.17 wires only the first `.primary-toggle` / `.secondary-toggle` in the page, its own
// button in the hidden header bar; the visible buttons are sphinx-book-theme's, in the article header, and
// nothing listens to them. Each visible button forwards its click to the wired one, which opens the
// theme's dialog on narrow screens (and, for the book's contents, collapses the sidebar on wide ones).
document.addEventListener("DOMContentLoaded", () => {
  for (const kind of ["primary", "secondary"]) {
    const wired = document.querySelector(`.${kind}-toggle`);
    if (!wired) continue;
    document.querySelectorAll(`.${kind}-toggle`).forEach((button) => {
      if (button === wired) return;
      button.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopPropagation();
        wired.click();
      });
    });
  }
});
