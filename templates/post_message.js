// The web_message and okta_post_message response modes: the authorization
// response goes to the window that opened this page (a popup) or framed it
// (silent authentication in a hidden iframe), and only to the application's
// registered web origin, so no other site can read the code.
(function () {
  var el = document.getElementById("post-message");
  var target = window.opener || window.parent;
  if (!el || target === window) {
    return;
  }
  target.postMessage(JSON.parse(el.dataset.message), el.dataset.targetOrigin);
})();
