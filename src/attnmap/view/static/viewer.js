/* attnmap viewer: the slide in OpenSeadragon with heatmap, tissue and annotation layers over it.
   Data arrive as small scripts calling attnmapData(name, payload), so the page works from a local
   server and from a folder opened on disk alike. */
"use strict";

const store = {};
const waiting = {};
let version = null, polled = null;
function attnmapData(name, payload) {
  if (name === "version") { polled = payload; return; }  // the whole content's; slideVersions follow
  if (name === "slideVersions") { onVersions(polled, payload); return; }
  store[name] = payload;
  if (waiting[name]) { waiting[name].forEach((resolve) => resolve(payload)); delete waiting[name]; }
}
window.attnmapData = attnmapData;

let polling = null, stopped = false;
const STOPPED = "The viewer's server stopped answering (was `attnmap view` closed?): start it again and reload this page";
function pollVersion() {  // served pages only: an exported folder never changes
  const script = document.createElement("script");
  script.src = "data/version.js?t=" + Date.now();
  script.onload = () => {
    script.remove();
    if (stopped) { stopped = false; showTitle(); }  // answering again (the same server: no reload)
  };
  script.onerror = () => {
    script.remove();
    if (version === null) { clearInterval(polling); return; }  // never answered: an export on a plain web server
    // answered before: the server is gone, and every tile asked from now on fails; say so, not a
    // still-looking page whose pans and clicks silently show nothing
    if (!stopped) { stopped = true; $("title").textContent = STOPPED; }
  };
  document.head.appendChild(script);
}
if (location.protocol.startsWith("http")) { pollVersion(); polling = setInterval(pollVersion, 2000); }

function onVersions(list, slides) {
  // the server re-read a rerun: reload when the slide in view changed (or moved in the list); when
  // only others did, refresh the slide list in place and keep looking
  if (version === null || list === version) { version = list; return; }
  if (!state.info || slides[state.info.id] !== state.info.version) { location.reload(); return; }
  version = list;
  const keep = "info-" + state.info.index, mine = "patches-" + state.info.index + "-";
  Object.keys(store).forEach((name) => { if (name !== keep && !name.startsWith(mine)) delete store[name]; });
  load("slides", "data/slides.js?t=" + Date.now()).then(showList).catch(() => location.reload());
}

function load(name, url) {
  if (store[name]) return Promise.resolve(store[name]);
  return new Promise((resolve, reject) => {
    (waiting[name] = waiting[name] || []).push(resolve);
    const script = document.createElement("script");
    script.src = url;
    script.onerror = () => reject(new Error("cannot load " + url));
    document.head.appendChild(script);
  });
}

const state = {
  slide: null, info: null, method: 0, opacity: 0.5, heat: null, tissue: null, annotations: null,
  patches: null, cells: null, loaded: false, title: "",
};
window.attnmap = { state: state };

const viewer = OpenSeadragon({
  id: "viewer", prefixUrl: "static/openseadragon/images/", showNavigationControl: false,
  drawer: "canvas", crossOriginPolicy: false, animationTime: 0.4, maxZoomPixelRatio: 2,
  showNavigator: true, navigatorPosition: "BOTTOM_RIGHT", timeout: 60000,
});
window.attnmap.viewer = viewer;

const $ = (id) => document.getElementById(id);

function fmt(value) {
  if (value === null || value === undefined) return "–";
  return Math.abs(value) >= 1000 || (Math.abs(value) < 0.01 && value !== 0) ? value.toExponential(2) : value.toPrecision(3);
}

function tilePresence(present) {
  // an exported folder leaves out overlay tiles where nothing is drawn: its info lists, per level, a
  // bitset (base64, row-major) of the tiles written, so the page never asks for a missing file
  const levels = present.map((bits) => Uint8Array.from(atob(bits), (c) => c.charCodeAt(0)));
  return function (level, x, y) {
    const numTiles = this.getNumTiles(level), bits = levels[level];
    if (!bits || x < 0 || y < 0 || x >= numTiles.x || y >= numTiles.y) return false;
    const i = y * numTiles.x + x;
    return (bits[i >> 3] & (1 << (i & 7))) !== 0;
  };
}

function addLayer(source, opacity, index) {
  // served: tile URLs name the version of the content, so a page older than a rerun gets no new tile
  const image = source.Image;
  const options = {
    width: Number(image.Size.Width), height: Number(image.Size.Height), tileSize: Number(image.TileSize),
    tileOverlap: Number(image.Overlap), tilesUrl: image.Url, fileFormat: image.Format,
  };
  if (location.protocol.startsWith("http") && state.info && state.info.version) {
    options.queryParams = "?v=" + encodeURIComponent(state.info.version);
  }
  if (source.present) options.tileExists = tilePresence(source.present);
  const tileSource = new OpenSeadragon.DziTileSource(options);
  return new Promise((resolve, reject) => {
    viewer.addTiledImage({
      tileSource: tileSource, opacity: opacity, index: index,
      success: (event) => resolve(event.item), error: (event) => reject(new Error(event.message)),
    });
  });
}

function slideItem() { return viewer.world.getItemAt(0); }

function saveView() {
  // the slide (by id: a rerun may renumber slides), the method (by name) and the viewport in the
  // address, which survives the reload after a rerun and can be bookmarked or shared
  if (!state.info) return;
  const centre = viewer.viewport.getCenter(true), method = state.info.methods[state.method];
  const params = new URLSearchParams({
    slide: state.info.id, method: method ? method.name : "", x: centre.x.toFixed(6), y: centre.y.toFixed(6),
    zoom: viewer.viewport.getZoom(true).toPrecision(6), opacity: String(Math.round(state.opacity * 100)),
  });
  history.replaceState(null, "", "#" + params.toString());
}
viewer.addHandler("animation-finish", saveView);

// Every change of slide, method or outline takes a ticket; a call that a later one overtook while it
// waited for the network drops what it loaded, so quick clicks never leave a stale layer stacked.
const tickets = { slide: 0, method: 0, tissue: 0, annotations: 0 };

async function showSlide(index, place) {
  // place: where to look (from the address's #fragment), so a reload after a rerun keeps the view
  const ticket = ++tickets.slide;
  state.loaded = false;
  const info = await load("info-" + index, "data/" + index + "/info.js");
  if (ticket !== tickets.slide) return;
  state.slide = index; state.info = info;
  viewer.world.removeAll();
  state.heat = state.tissue = state.annotations = null;
  const item = await addLayer(info.slide, 1, 0);
  if (ticket !== tickets.slide) { viewer.world.removeItem(item); return; }
  const zoom = place ? Number(place.get("zoom")) : NaN, x = place ? Number(place.get("x")) : NaN, y = place ? Number(place.get("y")) : NaN;
  if (zoom > 0 && Number.isFinite(x) && Number.isFinite(y)) {
    viewer.viewport.zoomTo(zoom, null, true);
    viewer.viewport.panTo(new OpenSeadragon.Point(x, y), true);
  }
  document.querySelectorAll("#slides li").forEach((li) => li.classList.toggle("active", Number(li.dataset.index) === index));
  const active = document.querySelector("#slides li.active");  // a long cohort list shows the slide in view
  if (active) active.scrollIntoView({ block: "nearest" });
  const select = $("method");
  select.innerHTML = "";
  info.methods.forEach((method) => {
    const option = document.createElement("option");
    option.value = method.index; option.textContent = method.name;
    select.appendChild(option);
  });
  $("show-tissue").disabled = !info.tissue;
  $("show-annotations").disabled = !info.annotations;
  const prediction = info.prediction;
  let title = info.id;
  if (prediction.prediction !== null && prediction.prediction !== undefined) {
    title += " — predicted " + prediction.prediction + (prediction.probability !== null ? " (p = " + prediction.probability.toFixed(3) + ")" : "");
  }
  if (prediction.label !== null && prediction.label !== undefined) title += " — label " + prediction.label;
  state.title = title;
  showTitle();
  describeSlide(info);
  drawScaleBar();
  const wanted = place ? info.methods.findIndex((method) => method.name === place.get("method")) : -1;
  await showMethod(info.methods.length ? Math.max(0, wanted) : -1);
  if (ticket !== tickets.slide) return;
  await toggleOutline("tissue");
  if (ticket !== tickets.slide) return;
  await toggleOutline("annotations");
}

async function showMethod(m) {
  const ticket = ++tickets.method;
  state.loaded = false;
  if (state.heat) { viewer.world.removeItem(state.heat); state.heat = null; }
  state.patches = null; state.cells = null;
  if (m < 0) return;
  const info = state.info, method = info.methods[m];
  state.method = m;
  $("method").value = String(m);
  const item = await addLayer(method.tiles, state.opacity, 1);
  if (ticket !== tickets.method || state.info !== info) {
    if (viewer.world.getIndexOfItem(item) >= 0) viewer.world.removeItem(item);
    return;
  }
  state.heat = item;
  saveView();
  drawColorbar(method);
  drawGallery(method);
  const patches = await load("patches-" + info.index + "-" + m, "data/" + info.index + "/patches-" + m + ".js");
  if (ticket === tickets.method && state.info === info) { indexPatches(patches); checkLoaded(); }
}

async function toggleOutline(name) {
  const ticket = ++tickets[name], info = state.info;
  const box = $("show-" + name), source = info && info[name];
  if (state[name]) { viewer.world.removeItem(state[name]); state[name] = null; }
  if (!source || !box.checked) return;
  const item = await addLayer(source, 1, viewer.world.getItemCount());
  if (ticket !== tickets[name] || state.info !== info) {
    if (viewer.world.getIndexOfItem(item) >= 0) viewer.world.removeItem(item);
    return;
  }
  state[name] = item;
}

function drawBar(prefix, scale, colours) {
  const stops = colours.map((c, i) => c + " " + (100 * i / (colours.length - 1)).toFixed(1) + "%");
  $(prefix + "-gradient").style.background = "linear-gradient(to right, " + stops.join(", ") + ")";
  // the most ticks whose labels do not run into each other at the bar's width (the PNG's legend
  // does the same): "-0.00192" and "-0.000962" overlapped and hid the minus sign of the second
  const ticks = $(prefix + "-ticks"), sets = scale.tickSets || [scale.ticks];
  for (const set of sets) {
    ticks.innerHTML = "";
    set.forEach(([position, label]) => {
      const span = document.createElement("span");
      span.style.left = (100 * position) + "%";
      span.textContent = label;
      ticks.appendChild(span);
    });
    if (labelsFit(ticks)) return;
  }
}

const TICK_GAP = 4;  // px between two labels at least
function labelsFit(ticks) {
  const bar = ticks.getBoundingClientRect();
  if (!(bar.width > 0)) return true;  // not laid out (hidden): nothing to measure
  let right = -Infinity;
  for (const span of ticks.children) {
    const box = span.getBoundingClientRect();
    if (box.left < right + TICK_GAP) return false;
    right = box.right;
  }
  return true;
}

function drawColorbar(method) {
  drawBar("colorbar", method.scale, method.colours);
  $("scale-caption").textContent = method.name + " score: " + method.scale.caption + "; colour map " + method.scale.cmap + "."
    + (method.note ? " " + method.note : "");
  const fine = method.fine;  // fine maps: a second bar for the maps drawn inside patches when zoomed in
  $("fine-legend").hidden = !fine;
  if (fine) {
    drawBar("fine-colorbar", fine.scale, fine.colours);
    $("fine-caption").textContent = "Inside patches: " + fine.scale.caption + "; colour map " + fine.scale.cmap + ".";
  }
}

function drawGallery(method) {
  const gallery = $("gallery");
  gallery.innerHTML = "";
  method.top.forEach((patch) => {
    const figure = document.createElement("figure");
    figure.title = "rank " + patch.rank + " at (" + patch.x + ", " + patch.y + ")";
    const img = document.createElement("img");
    img.src = patch.thumb; img.alt = "patch of rank " + patch.rank;
    const caption = document.createElement("figcaption");
    caption.textContent = "#" + patch.rank + " " + fmt(patch.score);
    figure.append(img, caption);
    figure.addEventListener("click", () => jumpTo(patch.x, patch.y, method.patchSize));
    gallery.appendChild(figure);
  });
}

function jumpTo(x, y, size) {
  const margin = size * 2;
  const rect = slideItem().imageToViewportRectangle(x - margin, y - margin, size + 2 * margin, size + 2 * margin);
  viewer.viewport.fitBounds(rect);
}

function indexPatches(patches) {
  const size = patches.patchSize, cells = new Map();
  for (let i = 0; i < patches.scores.length; i++) {
    const x = patches.coords[2 * i], y = patches.coords[2 * i + 1];
    for (let cx = Math.floor(x / size); cx <= Math.floor((x + size - 1) / size); cx++) {
      for (let cy = Math.floor(y / size); cy <= Math.floor((y + size - 1) / size); cy++) {
        const key = cx + "," + cy;
        if (!cells.has(key)) cells.set(key, []);
        cells.get(key).push(i);
      }
    }
  }
  state.patches = patches; state.cells = cells;
}

function patchesAt(x, y) {  // every patch over a level-0 point, the best-ranked first
  const patches = state.patches;
  if (!patches) return [];
  const size = patches.patchSize;
  const candidates = state.cells.get(Math.floor(x / size) + "," + Math.floor(y / size)) || [];
  return candidates.filter((i) => {
    const px = patches.coords[2 * i], py = patches.coords[2 * i + 1];
    return x >= px && x < px + size && y >= py && y < py + size;
  }).sort((a, b) => patches.ranks[a] - patches.ranks[b]);
}

function imageToPage(x, y) {
  const point = slideItem().imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
  const box = viewer.element.getBoundingClientRect();
  return { x: box.left + point.x, y: box.top + point.y };
}
window.attnmap.imageToPage = imageToPage;
window.attnmap.jumpTo = jumpTo;

new OpenSeadragon.MouseTracker({
  element: viewer.canvas,
  moveHandler: (event) => {
    const item = slideItem();
    if (!item) return;
    const image = item.viewerElementToImageCoordinates(event.position);
    const here = patchesAt(image.x, image.y), i = here.length ? here[0] : -1;
    const patches = state.patches, name = state.info ? state.info.methods[state.method].name : "";
    // an overlapping grid is drawn as the mean of the patches over each pixel: say it beside the best
    const mean = here.length > 1 && patches.overlapping
      ? "; here the mean of " + here.length + " overlapping patches, " + fmt(here.reduce((sum, j) => sum + patches.scores[j], 0) / here.length)
      : "";
    $("cursor").textContent = i < 0
      ? "(" + Math.round(image.x) + ", " + Math.round(image.y) + "): no patch"
      : name + " score " + fmt(patches.scores[i]) + ", rank " + patches.ranks[i] + " of " + patches.scores.length
        + " — patch at (" + patches.coords[2 * i] + ", " + patches.coords[2 * i + 1] + ")" + mean;
  },
});

function setOpacity(percent, save = true) {
  state.opacity = percent / 100;
  $("opacity-value").textContent = percent + "%";
  if (state.heat) state.heat.setOpacity(state.opacity);
  if (save) saveView();
}

$("opacity").addEventListener("input", (event) => setOpacity(Number(event.target.value)));
$("method").addEventListener("change", (event) => showMethod(Number(event.target.value)).catch(explain));
$("show-tissue").addEventListener("change", () => toggleOutline("tissue").catch(explain));
$("show-annotations").addEventListener("change", () => toggleOutline("annotations").catch(explain));

// The scale bar: a round length (1, 2 or 5 × 10^k µm) at most a quarter of the view wide, from the
// slide's µm per level-0 pixel and the viewport's level-0 pixels per screen pixel, redrawn on every
// viewport change. A slide that records no pixel size gets no bar (a guessed one would mislead).
const SCALE_FRACTION = 0.25;
const scalebar = $("scalebar");
viewer.addControl(scalebar, { anchor: OpenSeadragon.ControlAnchor.BOTTOM_LEFT, autoFade: false });

function roundLength(most) {  // the largest 1, 2 or 5 × 10^k not above ``most`` (> 0)
  const power = Math.pow(10, Math.floor(Math.log10(most)));
  const step = [5, 2, 1].find((s) => s * power <= most * (1 + 1e-9)) || 1;
  return step * power;
}

function lengthLabel(um) {
  return um >= 1000 ? Number((um / 1000).toPrecision(6)) + " mm" : Number(um.toPrecision(6)) + " µm";
}

function drawScaleBar() {
  const item = slideItem(), mpp = state.info && state.info.mpp;
  if (!item || !(mpp > 0)) { scalebar.hidden = true; return; }
  const a = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
  const b = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 0));
  const screenPerLevel0 = (b.x - a.x) / 1000, width = viewer.container.clientWidth;
  if (!(screenPerLevel0 > 0) || !(width > 0)) { scalebar.hidden = true; return; }
  const umPerScreen = mpp / screenPerLevel0;
  const um = roundLength(SCALE_FRACTION * width * umPerScreen);
  $("scalebar-bar").style.width = (um / umPerScreen) + "px";
  $("scalebar-label").textContent = lengthLabel(um);
  scalebar.hidden = false;
}
viewer.addHandler("update-viewport", drawScaleBar);
viewer.addHandler("resize", drawScaleBar);
window.attnmap.drawScaleBar = drawScaleBar;

function describeSlide(info) {
  const size = info.width + " × " + info.height + " px at level 0";
  $("slide-info").textContent = info.mpp > 0
    ? size + ", " + Number(info.mpp.toPrecision(4)) + " µm per pixel"
    : size + "; no scale: the slide records no pixel size";
}

function showTitle() { $("title").textContent = stopped ? STOPPED : state.title; }

async function explain(error) {
  // a load that failed, in one line in the title: the server's own reason when it gives one (a
  // run still writing its files), that it stopped when it does not answer; never an uncaught error
  let text = String(error && error.message ? error.message : error);
  if (location.protocol.startsWith("http")) {
    try {
      const response = await fetch("data/slides.js", { cache: "no-store" });
      if (!response.ok) text = (await response.text()).trim();
    } catch (ignored) { text = STOPPED; }
  }
  $("title").textContent = text;
}

function checkLoaded() {
  const count = viewer.world.getItemCount();
  let done = count > 0;
  for (let i = 0; i < count; i++) {
    const item = viewer.world.getItemAt(i);  // an invisible layer loads no tiles: nothing to wait for
    done = done && (item.getOpacity() === 0 || item.getFullyLoaded());
  }
  state.loaded = done && state.patches !== null;
}
viewer.addHandler("update-viewport", checkLoaded);
viewer.world.addHandler("add-item", (event) => event.item.addHandler("fully-loaded-change", checkLoaded));

function showList(data) {
  slideList = data;
  const list = $("slides");
  list.innerHTML = "";
  data.slides.forEach((slide) => {
    const li = document.createElement("li");
    li.dataset.index = slide.index;
    li.textContent = slide.id;
    const note = document.createElement("span");
    note.textContent = slide.prediction === null || slide.prediction === undefined ? ""
      : slide.prediction + (slide.probability !== null ? " " + slide.probability.toFixed(2) : "");
    li.appendChild(note);
    li.addEventListener("click", () => showSlide(slide.index).catch(explain));
    list.appendChild(li);
  });
  (data.unshown || []).forEach((item) => {  // slides of the run the viewer cannot show, and why
    const li = document.createElement("li");
    li.className = "unshown";
    li.textContent = item.id;
    li.title = item.reason;
    const note = document.createElement("small");
    note.textContent = item.reason;
    li.appendChild(note);
    list.appendChild(li);
  });
  $("slides-section").style.display = data.slides.length > 1 || (data.unshown || []).length ? "" : "none";
  if (state.info) list.querySelectorAll("li").forEach((li) => li.classList.toggle("active", Number(li.dataset.index) === state.info.index));
}

let slideList = null;  // the latest slide list (showList keeps it)

function unshownNames(id) {
  // the names a slide not shown has when shown: in a folder of runs it is listed as "<run>/<id>"
  // and shown as "<id>", or "<run>-<id>" where two runs hold the id
  const cut = id.indexOf("/");
  return cut < 0 ? [id] : [id, id.slice(cut + 1), id.slice(0, cut) + "-" + id.slice(cut + 1)];
}

function openPlace(place) {
  // the place an address names (slide by id, method by name, view, opacity): on start, and when the
  // #fragment changes without a reload (a bookmark or shared link opened in this tab, back/forward)
  const data = slideList, opacity = Number(place.get("opacity"));
  if (place.has("opacity") && opacity >= 0 && opacity <= 100) $("opacity").value = String(opacity);
  setOpacity(Number($("opacity").value), false);
  const start = data.slides.findIndex((slide) => slide.id === place.get("slide"));
  const away = (data.unshown || []).find((item) => unshownNames(item.id).includes(place.get("slide")));
  if (start < 0 && away) {  // the slide in view is being rerun: say so and keep the place for its return
    tickets.slide++;
    viewer.world.removeAll();
    state.info = state.heat = state.tissue = state.annotations = state.patches = null;
    state.title = away.id + " is not shown: " + away.reason + " (this page reloads when it changes)";
    showTitle();
    return Promise.resolve();
  }
  if (!data.slides.length) return Promise.resolve();
  if (start >= 0 && state.info && state.info.index === data.slides[start].index) {  // the same slide
    const wanted = state.info.methods.findIndex((method) => method.name === place.get("method"));
    const zoom = Number(place.get("zoom")), x = Number(place.get("x")), y = Number(place.get("y"));
    if (zoom > 0 && Number.isFinite(x) && Number.isFinite(y)) {
      viewer.viewport.zoomTo(zoom, null, true);
      viewer.viewport.panTo(new OpenSeadragon.Point(x, y), true);
    }
    return wanted >= 0 && wanted !== state.method ? showMethod(wanted) : Promise.resolve(saveView());
  }
  return start >= 0 ? showSlide(data.slides[start].index, place) : showSlide(data.slides[0].index);
}

window.addEventListener("hashchange", () => {  // replaceState (saveView) fires none: only a new address
  if (slideList) openPlace(new URLSearchParams(location.hash.slice(1))).catch(explain);
});

load("slides", "data/slides.js").then((data) => {
  showList(data);
  return openPlace(new URLSearchParams(location.hash.slice(1)));
}).catch(explain);
