/* Progressive enhancement only: every form works without this file. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function onReady(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }

  // county -> township: show only the chosen county's townships (without JS all are listed, grouped)
  function townshipPickers() {
    document.querySelectorAll("select[data-township-picker]").forEach(function (county) {
      var township = document.getElementById(county.getAttribute("data-township-picker"));
      if (!township) { return; }
      var groups = Array.prototype.slice.call(township.querySelectorAll("optgroup"));
      var originals = groups.map(function (g) { return g.cloneNode(true); });
      function sync() {
        var chosen = county.value;
        var current = township.value;
        groups.forEach(function (g) { g.remove(); });
        groups = originals.filter(function (g) { return !chosen || g.getAttribute("data-county") === chosen; })
          .map(function (g) { var copy = g.cloneNode(true); township.appendChild(copy); return copy; });
        township.value = current;
        if (township.value !== current) { township.value = ""; }
      }
      county.addEventListener("change", sync);
      sync();
    });
  }

  // reply templates: choosing one fills the reply box at once
  function templatePickers() {
    document.querySelectorAll("select[data-fills]").forEach(function (select) {
      var target = document.getElementById(select.getAttribute("data-fills"));
      var idField = document.getElementById(select.getAttribute("data-template-id"));
      select.addEventListener("change", function () {
        var option = select.options[select.selectedIndex];
        if (idField) { idField.value = select.value; }
        if (target && option && option.getAttribute("data-text") !== null) { target.value = option.getAttribute("data-text"); }
      });
    });
  }

  // reassign: list only the units that handle the chosen category
  function unitFilters() {
    document.querySelectorAll("select[data-filters-units]").forEach(function (category) {
      var units = document.getElementById(category.getAttribute("data-filters-units"));
      if (!units) { return; }
      function sync() {
        var code = category.value;
        Array.prototype.forEach.call(units.options, function (option) {
          if (!option.value) { return; }
          var handles = (option.getAttribute("data-categories") || "").split(" ");
          var show = !code || handles.indexOf(code) !== -1;
          option.hidden = !show;
          option.disabled = !show;
        });
        var chosen = units.options[units.selectedIndex];
        if (chosen && chosen.disabled) { units.value = ""; }
      }
      category.addEventListener("change", sync);
      sync();
    });
  }

  // photos: the native file button is labelled in the browser's language, so it is hidden behind ours and
  // what was chosen is said in Chinese (without scripts the native control shows, and works)
  function filePickers() {
    document.querySelectorAll("input[type=file][data-file-picker]").forEach(function (input) {
      var chosen = document.getElementById(input.getAttribute("data-file-picker"));
      if (!chosen) { return; }
      function sync() {
        var names = Array.prototype.map.call(input.files || [], function (f) { return f.name; });
        chosen.textContent = names.length ? "已选择 " + names.length + " 张：" + names.join("、") : "未选择照片";
      }
      input.addEventListener("change", sync);
      sync();
    });
  }

  // the error summary gets the focus, so keyboard and screen-reader users start there
  function focusSummary() {
    var summary = document.getElementById("error-summary");
    if (summary) { summary.focus(); }
  }

  onReady(function () { townshipPickers(); templatePickers(); unitFilters(); filePickers(); focusSummary(); });
})();
