// Clicking a sentence's time seeks the item's audio player there (no inline handlers: the
// page's CSP allows scripts from this origin only).
document.addEventListener("click", function (event) {
  var button = event.target.closest("button.seek");
  var player = document.getElementById("player");
  if (!button || !player) { return; }
  player.currentTime = parseFloat(button.dataset.start) || 0;
  player.play().catch(function () {});
});
