// payhub console: draws each chart from the JSON beside its canvas (figure.chart), with the vendored Chart.js.
// Without JavaScript every chart's data is still on the page as a table.
"use strict";
(function () {
  const palette = ["#0b5cad", "#d1495b", "#2a9d8f", "#e9c46a", "#6d597a", "#f4a261", "#264653", "#8d99ae"];
  function draw(figure) {
    const id = figure.dataset.chart;
    const source = document.getElementById("chart-" + id + "-data");
    const canvas = document.getElementById("chart-" + id);
    if (!source || !canvas || typeof Chart === "undefined") return;
    const data = JSON.parse(source.textContent);
    const kind = figure.dataset.kind || "bar";
    data.datasets.forEach(function (set, i) {
      const colour = palette[i % palette.length];
      set.backgroundColor = kind === "doughnut" ? palette : colour;
      set.borderColor = colour;
    });
    const chart = new Chart(canvas, {
      type: kind, data: data,
      options: { responsive: true, maintainAspectRatio: false, animation: false,
                 plugins: { legend: { display: data.datasets.length > 1 || kind === "doughnut" } } },
    });
    figure.dataset.drawn = String(chart.data.labels.length);
  }
  function start() { document.querySelectorAll("figure.chart").forEach(draw); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
