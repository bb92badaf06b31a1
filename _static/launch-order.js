// Put "Launch on Colab" first in every launch-button menu (the theme lists Binder first).
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll('a[href^="https://colab.research.google.com"]').forEach((a) => {
    const li = a.closest("li");
    if (li && li.parentElement) li.parentElement.insertBefore(li, li.parentElement.firstElementChild);
  });
});
