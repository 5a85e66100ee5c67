// OAuth 2.0 Form Post Response Mode §2: submit the response to the client
// without user interaction. Served as a file so the page's
// Content-Security-Policy can forbid inline scripts.
document.getElementById("form-post").submit();
