// The dashboard's enhancements. Every page reads without them: charts are drawn from the tables
// beside them, and the life-cycle diagram from the Mermaid text the page holds.
(function () {
  "use strict";
  var base = document.currentScript.src.replace(/ui\.js(\?.*)?$/, "vendor/");
  var loading = {};

  function load(file) {
    if (!loading[file]) {
      loading[file] = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = base + file;
        script.onload = resolve;
        script.onerror = reject;
        document.head.appendChild(script);
      });
    }
    return loading[file];
  }

  var colours = ["#1f5fa8", "#b8560b", "#2e7d32", "#8e24aa", "#c62828", "#00838f"];

  function number(text) {
    var value = parseFloat(text);
    return isNaN(value) ? null : value;
  }

  function drawChart(table) {
    var canvas = document.getElementById(table.dataset.chart);
    if (!canvas || canvas.dataset.drawn) return;
    var labels = Array.prototype.slice.call(table.tHead.rows[0].cells, 1).map(function (c) { return c.textContent; });
    var datasets = Array.prototype.map.call(table.tBodies[0].rows, function (row, i) {
      if (row.cells.length < 2 || row.cells[0].tagName !== "TH") return null;
      return {
        label: row.cells[0].textContent,
        data: Array.prototype.slice.call(row.cells, 1).map(function (c) { return number(c.textContent); }),
        borderColor: colours[i % colours.length], backgroundColor: colours[i % colours.length],
        spanGaps: true, tension: 0.2
      };
    }).filter(Boolean);
    if (!datasets.length || !labels.length) return;
    canvas.dataset.drawn = "1";
    new window.Chart(canvas, {
      type: "line",
      data: {labels: labels, datasets: datasets},
      options: {responsive: true, maintainAspectRatio: false, animation: false,
                scales: {y: {beginAtZero: true, title: {display: true, text: "days"}}}}
    });
  }

  function enhance(root) {
    var tables = root.querySelectorAll ? root.querySelectorAll("table.chart-data") : [];
    if (tables.length) {
      load("chart.umd.min.js").then(function () { tables.forEach(drawChart); }).catch(function () {});
    }
    var diagrams = root.querySelectorAll ? root.querySelectorAll("pre.mermaid:not([data-processed])") : [];
    if (diagrams.length) {
      load("mermaid.min.js").then(function () {
        if (!window.mermaid.ready) {
          window.mermaid.initialize({startOnLoad: false, securityLevel: "strict", theme: "neutral"});
          window.mermaid.ready = true;
        }
        // A page replaced while the diagram was drawn keeps its text; nothing else is lost.
        var attached = Array.prototype.filter.call(diagrams, function (node) { return node.isConnected; });
        return window.mermaid.run({nodes: attached, suppressErrors: true});
      }).catch(function () {});
    }
  }

  document.addEventListener("htmx:load", function (event) { enhance(event.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () { if (!window.htmx) enhance(document); });
})();
