// The login form: POST /login as JSON; the session cookie is HttpOnly, so the
// page never sees it. On success the app page takes over.
"use strict";
document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
  error.hidden = true;
  const body = JSON.stringify({
    username: document.getElementById("username").value,
    password: document.getElementById("password").value,
  });
  let reply;
  try {
    reply = await fetch("/login", {method: "POST", body, headers: {"content-type": "application/json"},
                                   credentials: "same-origin"});
  } catch (e) {
    error.textContent = "The broker cannot be reached";
    error.hidden = false;
    return;
  }
  if (reply.ok) {
    location.href = "/";
    return;
  }
  let reason = "Login failed";
  try { reason = (await reply.json()).reason || reason; } catch (e) { /* not JSON */ }
  error.textContent = reason;
  error.hidden = false;
});
