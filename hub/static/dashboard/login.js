// The login form: POST /auth/login (which sets the session cookie), then on to the page asked for.
"use strict";
(() => {
  const form = document.getElementById("login");
  const error = document.getElementById("login-error");
  // only a path of this hub: never another site (//host, /\host) or a scheme
  const asked = new URLSearchParams(location.search).get("next") || "";
  const next = /^\/(?![\/\\])/.test(asked) ? asked : "/dashboard";

  const say = (text) => { error.textContent = text; error.hidden = !text; };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = form.username.value.trim();
    const password = form.password.value;
    if (!username || !password) return say("Enter your user name and password.");
    const button = form.querySelector("button");
    button.disabled = true;
    say("");
    try {
      const r = await fetch("/auth/login", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify({ username, password }),
      });
      if (r.ok) return location.assign(next);
      const body = await r.json().catch(() => ({}));
      say(r.status === 401 ? "Wrong user name or password." : (body.detail || `The hub answered ${r.status}.`));
    } catch (e) {
      say(`The hub cannot be reached: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  });
})();
