"use strict";
// The login page: show the failure note, switch the language.
document.addEventListener("DOMContentLoaded", () => {
  if (new URLSearchParams(location.search).has("failed")) {
    document.getElementById("login-failed").classList.remove("hidden");
  }
  PEDF.i18n.bindSwitch();
  PEDF.i18n.apply();
});
