// The dashboard's small progressive enhancement: the page works without it (plain forms and
// links); with it, the blotter and the summary refresh in place, the order form is sent
// without a reload and its orders are followed until they end, and every control asks first.
(function () {
  "use strict";
  var FRAGMENT = {"X-Dashboard": "fragment"};

  function query() {
    var form = document.getElementById("blotter-filters");
    var params = new URLSearchParams(form ? new FormData(form) : undefined);
    var limit = new URLSearchParams(location.search).get("limit");
    if (limit) params.set("limit", limit);
    return params.toString();
  }

  function refresh(element) {
    var src = element.dataset.src + (element.id === "blotter" ? "?" + query() : "");
    return fetch(src, {headers: FRAGMENT, credentials: "same-origin"}).then(function (reply) {
      if (reply.ok) return reply.text().then(function (html) { element.innerHTML = html; });
      if (reply.status === 403 || reply.status === 302) location.reload();
    }).catch(function () { /* the next tick tries again */ });
  }

  function every(element) {
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      refresh(element).finally(function () { busy = false; });
    }, Number(element.dataset.every || 2000));
  }

  function follow(area) {
    var placed = area.querySelector("#placed");
    if (!placed || placed.dataset.terminal === "1" || !placed.dataset.ids) return;
    setTimeout(function () {
      fetch("/dashboard/placed/?ids=" + encodeURIComponent(placed.dataset.ids), {headers: FRAGMENT})
        .then(function (reply) { return reply.ok ? reply.text() : null; })
        .then(function (html) {
          if (html === null) return;
          var result = area.querySelector("#order-result");
          result.innerHTML = html;
          follow(area);
        });
    }, 700);
  }

  function renumber(leg, index) {
    leg.dataset.leg = index;
    leg.querySelector("legend").textContent = "Leg " + (index + 1);
    leg.querySelectorAll("[name]").forEach(function (input) {
      input.name = input.name.replace(/^leg-\d+-/, "leg-" + index + "-");
    });
  }

  function addLeg() {
    var legs = document.querySelectorAll("#legs fieldset.leg");
    if (legs.length >= 20) return;
    var copy = legs[legs.length - 1].cloneNode(true);
    copy.querySelectorAll("input").forEach(function (input) { input.value = ""; });
    copy.querySelectorAll(".error").forEach(function (error) { error.remove(); });
    renumber(copy, legs.length);
    document.getElementById("legs").appendChild(copy);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      return;
    }
    if (form.id !== "order-form") return;
    event.preventDefault();
    var data = new FormData(form);
    if (event.submitter && event.submitter.name) data.set(event.submitter.name, event.submitter.value);
    form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
    // getAttribute: the form has buttons named "action", which form.action would return
    fetch(form.getAttribute("action"), {method: "POST", body: data, headers: FRAGMENT, credentials: "same-origin"})
      .then(function (reply) { return reply.text(); })
      .then(function (html) {
        var area = document.getElementById("order-form-area");
        area.innerHTML = html;
        follow(area);
        var blotter = document.getElementById("blotter");
        if (blotter) refresh(blotter);
      })
      .catch(function () {
        form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = false; });
      });
  });

  // The symbol master's search (/api/instruments/, this session's cookie) as the symbol
  // fields' suggestions; without a master it finds nothing and any symbol may be typed.
  var searching = null;
  document.addEventListener("input", function (event) {
    var input = event.target;
    if (!input.name || !/^leg-\d+-symbol$/.test(input.name) || input.value.length < 2) return;
    clearTimeout(searching);
    searching = setTimeout(function () {
      var exchange = document.querySelector("#order-form select[name=exchange]");
      var url = "/api/instruments/?q=" + encodeURIComponent(input.value) +
        (exchange ? "&exchange=" + encodeURIComponent(exchange.value) : "");
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (reply) { return reply.ok ? reply.json() : {results: []}; })
        .then(function (found) {
          var list = document.getElementById("symbols");
          if (!list) return;
          list.innerHTML = "";
          (found.results || []).forEach(function (instrument) {
            var option = document.createElement("option");
            option.value = instrument.trading_symbol;
            option.label = instrument.symbol + " lot " + instrument.lot_size + " tick " + instrument.tick_size;
            list.appendChild(option);
          });
        });
    }, 200);
  });

  document.addEventListener("click", function (event) {
    if (event.target.id === "add-leg") addLeg();
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-src][data-every]").forEach(every);
    var filters = document.getElementById("blotter-filters");
    if (filters) filters.addEventListener("change", function () { refresh(document.getElementById("blotter")); });
  });
})();
