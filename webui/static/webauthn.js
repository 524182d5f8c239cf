// Security keys (WebAuthn): registration on /mfa and the second step of a
// password sign-in. The broker's options carry binary fields as base64url;
// the browser's API wants ArrayBuffers, and the broker reads the answer
// as JSON with base64url fields again.
(function () {
  "use strict";
  function toBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var b = atob(s), a = new Uint8Array(b.length);
    for (var i = 0; i < b.length; i++) a[i] = b.charCodeAt(i);
    return a.buffer;
  }
  function toB64(buf) {
    var a = new Uint8Array(buf), s = "";
    for (var i = 0; i < a.length; i++) s += String.fromCharCode(a[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function show(id, msg) {
    var el = document.getElementById(id);
    el.textContent = msg;
    el.hidden = false;
  }

  var login = document.getElementById("webauthn-login");
  if (login) {
    var opts = JSON.parse(document.getElementById("webauthn-options").textContent).publicKey;
    opts.challenge = toBuf(opts.challenge);
    (opts.allowCredentials || []).forEach(function (c) { c.id = toBuf(c.id); });
    var go = function () {
      navigator.credentials.get({ publicKey: opts }).then(function (cred) {
        var r = cred.response;
        document.getElementById("credential").value = JSON.stringify({
          id: cred.id, rawId: toB64(cred.rawId), type: cred.type,
          response: {
            authenticatorData: toB64(r.authenticatorData), clientDataJSON: toB64(r.clientDataJSON),
            signature: toB64(r.signature), userHandle: r.userHandle ? toB64(r.userHandle) : null
          }
        });
        login.submit();
      }, function (e) { show("webauthn-error", "The security key did not answer: " + e.message); });
    };
    document.getElementById("webauthn-go").addEventListener("click", go);
    go();
  }

  // Registration for tg (tg mfa add --type=webauthn): the options are in
  // the page, the answer is posted with the page's ticket.
  var tgReg = document.getElementById("webauthn-register-tg");
  if (tgReg) {
    var pk = JSON.parse(document.getElementById("webauthn-options").textContent).publicKey;
    pk.challenge = toBuf(pk.challenge);
    pk.user.id = toBuf(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = toBuf(c.id); });
    var create = function () {
      navigator.credentials.create({ publicKey: pk }).then(function (cred) {
        var r = cred.response;
        document.getElementById("credential").value = JSON.stringify({
          id: cred.id, rawId: toB64(cred.rawId), type: cred.type,
          response: { attestationObject: toB64(r.attestationObject), clientDataJSON: toB64(r.clientDataJSON) }
        });
        tgReg.submit();
      }, function (e) { show("webauthn-error", "The security key did not answer: " + e.message); });
    };
    document.getElementById("webauthn-go").addEventListener("click", create);
    create();
  }

  var reg = document.getElementById("webauthn-register");
  if (reg) {
    var csrf = reg.querySelector("input[name=csrf]").value;
    var post = function (path, body) {
      return fetch(path, { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: body })
        .then(function (res) {
          return res.json().then(function (j) {
            if (!res.ok) throw new Error(j.error || res.statusText);
            return j;
          });
        });
    };
    document.getElementById("webauthn-add").addEventListener("click", function () {
      post("/mfa/webauthn/begin", "csrf=" + encodeURIComponent(csrf)).then(function (o) {
        var pk = o.publicKey;
        pk.challenge = toBuf(pk.challenge);
        pk.user.id = toBuf(pk.user.id);
        (pk.excludeCredentials || []).forEach(function (c) { c.id = toBuf(c.id); });
        return navigator.credentials.create({ publicKey: pk });
      }).then(function (cred) {
        var r = cred.response;
        var body = JSON.stringify({
          id: cred.id, rawId: toB64(cred.rawId), type: cred.type,
          response: { attestationObject: toB64(r.attestationObject), clientDataJSON: toB64(r.clientDataJSON) }
        });
        return post("/mfa/webauthn/finish", "csrf=" + encodeURIComponent(csrf) + "&credential=" + encodeURIComponent(body));
      }).then(function () {
        show("webauthn-result", "Security key added.");
      }, function (e) { show("webauthn-result", "Not added: " + e.message); });
    });
  }
})();
