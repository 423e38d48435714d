// ai4land viewer: pre-rendered layers per (scenario, year) as Leaflet image overlays
// on the grid's bounds, and the class fractions of a clicked cell, year by year.
// Reads data/index.json and data/<scenario>/cells.json (written by `ai4land publish`).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { index: null, scenario: null, year: null, layer: "lulc", cell: null };
  const cells = {};  // scenario -> its cells.json (fetched on the first click)
  let map = null, overlay = null, box = null, bounds = null;
  // time to the first map on the page (ms since navigation start), read by the benchmark
  window.ai4land = { firstMapMs: null, loaded: null };

  function fetchJson(url) {
    return fetch(url).then((r) => {
      if (!r.ok) throw new Error(url + ": HTTP " + r.status);
      return r.json();
    });
  }

  function layerUrl() {
    return "data/" + state.scenario.name + "/" + state.year + "_" + state.layer + ".png";
  }

  function showLayer() {
    const url = layerUrl();
    if (overlay === null) {
      overlay = L.imageOverlay(url, bounds, { interactive: false }).addTo(map);
      overlay.on("load", () => {
        const src = overlay.getElement().getAttribute("src");
        if (window.ai4land.firstMapMs === null) window.ai4land.firstMapMs = performance.now();
        window.ai4land.loaded = src;
        document.body.dataset.loaded = src;
      });
      overlay.on("error", () => console.error("layer not found: " + url));
    } else {
      overlay.setUrl(url);
    }
    overlay.getElement().classList.toggle("classes", state.layer === "lulc");
    $("year-label").textContent = String(state.year);
    document.body.dataset.year = String(state.year);
    document.body.dataset.scenario = state.scenario.name;
    document.body.dataset.layer = state.layer;
    for (const row of document.querySelectorAll("#cell tr[data-year]")) {
      row.classList.toggle("current", row.dataset.year === String(state.year));
    }
  }

  function showLegend() {
    const legend = $("legend");
    legend.textContent = "";
    const head = document.createElement("h3");
    legend.appendChild(head);
    if (state.layer === "lulc") {
      head.textContent = "Classes";
      for (const c of state.index.classes) {
        const line = document.createElement("div");
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = c.colour;
        line.appendChild(swatch);
        line.appendChild(document.createTextNode(c.code + " " + c.name));
        legend.appendChild(line);
      }
    } else {
      head.textContent = state.layer === "probability"
        ? "Probability of the mapped class" : "Normalised entropy";
      const ramp = document.createElement("div");
      ramp.className = "ramp";
      legend.appendChild(ramp);
      const ends = document.createElement("div");
      ends.textContent = "0 \u2192 1 in steps of 0.05 (transparent: no data)";
      legend.appendChild(ends);
    }
  }

  function setScenario(name) {
    state.scenario = state.index.scenarios.find((s) => s.name === name);
    const years = state.scenario.years;
    const slider = $("year");
    slider.max = String(years.length - 1);
    let i = years.indexOf(state.year);
    if (i < 0) i = 0;
    slider.value = String(i);
    state.year = years[i];
    showLayer();
    if (state.cell !== null) showCell(state.cell.row, state.cell.col);
  }

  function cellBounds(row, col) {
    const [west, , , north] = state.index.bounds;
    const d = state.index.cells.degrees;
    return [[north - (row + 1) * d, west + col * d], [north - row * d, west + (col + 1) * d]];
  }

  function showCell(row, col) {
    state.cell = { row: row, col: col };
    const scenario = state.scenario.name;
    const ready = cells[scenario]
      ? Promise.resolve(cells[scenario])
      : fetchJson("data/" + scenario + "/cells.json").then((c) => (cells[scenario] = c));
    ready.then((data) => renderCell(data, row, col)).catch((e) => console.error(String(e)));
    if (box === null) {
      box = L.rectangle(cellBounds(row, col), { color: "#000", weight: 2, fill: false,
        interactive: false }).addTo(map);
    } else {
      box.setBounds(cellBounds(row, col));
    }
  }

  // the cell's class fractions by year as lines (one per class present), in an SVG
  function chart(data, index) {
    const ns = "http://www.w3.org/2000/svg";
    const w = 400, h = 150, pad = 28, k = data.classes.length;
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("id", "cell-chart");
    const years = data.years, n = years.length;
    const x = (i) => pad + (n > 1 ? (i * (w - pad - 8)) / (n - 1) : (w - pad) / 2);
    const y = (bp) => h - pad + 8 - (bp / 10000) * (h - pad);
    const line = (x1, y1, x2, y2, colour) => {
      const l = document.createElementNS(ns, "line");
      Object.entries({ x1: x1, y1: y1, x2: x2, y2: y2, stroke: colour }).forEach(
        ([a, v]) => l.setAttribute(a, v));
      svg.appendChild(l);
    };
    const text = (tx, ty, value, anchor) => {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", tx);
      t.setAttribute("y", ty);
      t.setAttribute("font-size", "9");
      t.setAttribute("text-anchor", anchor);
      t.textContent = value;
      svg.appendChild(t);
    };
    line(pad, y(0), w - 8, y(0), "#999");
    line(pad, y(0), pad, y(10000), "#999");
    text(pad - 3, y(10000) + 3, "100%", "end");
    text(pad - 3, y(0) + 3, "0", "end");
    text(x(0), h - 4, String(years[0]), "middle");
    if (n > 1) text(x(n - 1), h - 4, String(years[n - 1]), "end");
    const colours = {};
    for (const c of state.index.classes) colours[c.code] = c.colour;
    data.classes.forEach((code, c) => {
      const values = years.map((_, t) => data.bp[t][index * k + c]);
      if (values.every((v) => v === 0)) return;
      const points = values.map((v, t) => x(t) + "," + y(v)).join(" ");
      const p = document.createElementNS(ns, n > 1 ? "polyline" : "circle");
      if (n > 1) {
        p.setAttribute("points", points);
        p.setAttribute("fill", "none");
        p.setAttribute("stroke-width", "2");
      } else {
        p.setAttribute("cx", x(0));
        p.setAttribute("cy", y(values[0]));
        p.setAttribute("r", "3");
        p.setAttribute("fill", colours[code]);
      }
      p.setAttribute("stroke", colours[code]);
      svg.appendChild(p);
    });
    return svg;
  }

  function renderCell(data, row, col) {
    const panel = $("cell");
    const index = row * state.index.cells.cols + col;
    const k = data.classes.length;
    const names = {};
    for (const c of state.index.classes) names[c.code] = c.name;
    const [lower, upper] = cellBounds(row, col);
    panel.textContent = "";
    panel.dataset.row = String(row);
    panel.dataset.col = String(col);
    panel.dataset.scenario = data.scenario;
    const head = document.createElement("h3");
    head.textContent = data.scenario + ": cell row " + row + ", column " + col + " ("
      + lower[0].toFixed(2) + "\u2013" + upper[0].toFixed(2) + "\u00b0N, "
      + lower[1].toFixed(2) + "\u2013" + upper[1].toFixed(2) + "\u00b0E), % of pixels"
      + (state.index.cells.step > 1 ? " (estimated at 1/" + state.index.cells.step
        + " of the resolution)" : "");
    panel.appendChild(head);
    panel.appendChild(chart(data, index));
    const table = document.createElement("table");
    table.id = "cell-table";
    const tr = document.createElement("tr");
    tr.appendChild(Object.assign(document.createElement("th"), { textContent: "year" }));
    for (const code of data.classes) {
      tr.appendChild(Object.assign(document.createElement("th"),
        { className: "class", textContent: names[code] || String(code) }));
    }
    tr.appendChild(Object.assign(document.createElement("th"), { textContent: "pixels" }));
    table.appendChild(tr);
    data.years.forEach((year, y) => {
      const line = document.createElement("tr");
      line.dataset.year = String(year);
      line.appendChild(Object.assign(document.createElement("td"), { textContent: year }));
      data.classes.forEach((code, c) => {
        const td = document.createElement("td");
        td.dataset.class = String(code);
        td.textContent = (data.bp[y][index * k + c] / 100).toFixed(2);
        line.appendChild(td);
      });
      const n = document.createElement("td");
      n.className = "pixels";
      n.textContent = String(data.pixels[y][index]);
      line.appendChild(n);
      line.classList.toggle("current", year === state.year);
      table.appendChild(line);
    });
    panel.appendChild(table);
  }

  function onClick(e) {
    const [west, south, east, north] = state.index.bounds;
    const { lat, lng } = e.latlng;
    if (lat < south || lat >= north || lng < west || lng >= east) return;
    const d = state.index.cells.degrees;
    const row = Math.min(Math.floor((north - lat) / d), state.index.cells.rows - 1);
    const col = Math.min(Math.floor((lng - west) / d), state.index.cells.cols - 1);
    showCell(row, col);
  }

  function start(index) {
    state.index = index;
    const [west, south, east, north] = index.bounds;
    bounds = [[south, west], [north, east]];
    $("title").textContent = index.title;
    document.title = index.title;
    map = L.map("map", { crs: L.CRS.EPSG4326, zoomSnap: 0.25, attributionControl: false });
    map.fitBounds(bounds);
    map.on("click", onClick);
    const select = $("scenario");
    for (const s of index.scenarios) select.add(new Option(s.name, s.name));
    select.addEventListener("change", () => setScenario(select.value));
    $("year").addEventListener("input", (e) => {
      state.year = state.scenario.years[Number(e.target.value)];
      showLayer();
    });
    for (const radio of document.querySelectorAll("input[name=layer]")) {
      radio.addEventListener("change", () => {
        state.layer = radio.value;
        showLegend();
        showLayer();
      });
    }
    showLegend();
    setScenario(index.scenarios[0].name);
  }

  fetchJson("data/index.json").then(start).catch((e) => console.error(String(e)));
})();
