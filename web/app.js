// Draw a digit: when a stroke ends, what is drawn on the pad is turned into
// an MNIST image (mnist.js) and sent as a 28x28 PNG to the model's
// predict_png signature through TensorFlow Serving's REST API, served by
// model_server.py or by TensorFlow Serving itself.
//
// Query parameters: ?server=URL (default DEFAULT_SERVER_URL), ?model=NAME,
// ?version=N (default: the version the server serves by default).

import * as config from "./config.js";
import { inkOf, toMnist } from "./mnist.js";

// The pad is ten canvas pixels per MNIST pixel. The pen is a fourteenth of the
// pad: a digit from about 45% to 90% of the pad's height then has MNIST's
// stroke width (0.08 to 0.17 of the digit's size, preprocessing.THIN_STROKE
// and THICK_STROKE), and no drawing is smaller than the 20x20 box.
const PAD_SIZE = 10 * config.IMAGE_SIZE;
const PEN_WIDTH = PAD_SIZE / 14;
const INK_COLOUR = "#1b1f24";
// A stroke keeps at most this many points (minutes of drawing); it stops growing there.
const MAX_STROKE_POINTS = 10000;
// TensorFlow Serving gives up on a prediction after 30 s (--rest_api_timeout_in_ms).
const TIMEOUT_SECONDS = 35;
// Answers here are a few kilobytes; anything far larger is not one.
const MAX_ANSWER_BYTES = 1 << 20;
const MAX_PARAMETER_CHARACTERS = 2000;

class PageError extends Error {}

const pad = document.getElementById("pad");
const pen = pad.getContext("2d", { willReadFrequently: true });
const digitText = document.getElementById("digit");
const versionText = document.getElementById("version");
const sentImage = document.getElementById("sent");
const probabilityList = document.getElementById("probabilities");
const statusLine = document.getElementById("status");

const bars = [];
for (let digit = 0; digit < config.NUM_CLASSES; digit += 1) {
  const bar = document.createElement("li");
  bar.dataset.digit = String(digit);
  bars.push(bar);
}
probabilityList.replaceChildren(...bars);

// Each classification takes a ticket; an answer whose ticket is no longer the
// latest (another stroke, or Clear, came since) is dropped.
let latestTicket = 0;
let stroke = null;
let settings = null;

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

/** ?server=, ?model= and ?version=, checked. */
function readSettings(query) {
  const parameter = (name) => {
    const value = query.get(name);
    if (value !== null && value.length > MAX_PARAMETER_CHARACTERS) {
      throw new PageError(`?${name}= is longer than ${MAX_PARAMETER_CHARACTERS} characters.`);
    }
    return value;
  };
  const serverText = parameter("server") ?? config.DEFAULT_SERVER_URL;
  let server;
  try {
    server = new URL(serverText);
  } catch {
    server = null;
  }
  if (server === null || !["http:", "https:"].includes(server.protocol) || server.search || server.hash) {
    throw new PageError(
      `?server= must be an address such as ${config.DEFAULT_SERVER_URL}, got "${serverText}".`,
    );
  }
  const model = parameter("model") ?? config.MODEL_NAME;
  // TensorFlow Serving's URLs take any name without "/" or ":".
  if (!/^[^/:]+$/.test(model)) {
    throw new PageError(`?model= must be a model name without "/" or ":", got "${model}".`);
  }
  const version = parameter("version");
  if (version !== null && !/^\d{1,18}$/.test(version)) {
    throw new PageError(`?version= must be a version number such as 1, got "${version}".`);
  }
  return {
    server: (server.origin + server.pathname).replace(/\/+$/, ""),
    model,
    version,
  };
}

function modelUrl(version) {
  let url = `${settings.server}/v1/models/${encodeURIComponent(settings.model)}`;
  if (version !== null) {
    url += `/versions/${version}`;
  }
  return url;
}

/** The body of an answer, refused past MAX_ANSWER_BYTES. */
async function readText(response) {
  const reader = response.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    size += value.length;
    if (size > MAX_ANSWER_BYTES) {
      await reader.cancel();
      throw new PageError(`${settings.server} answered with more than ${MAX_ANSWER_BYTES} bytes.`);
    }
    chunks.push(value);
  }
  return new Blob(chunks).text();
}

/** Sends a request to the model server; its JSON answer, or a PageError that says what went wrong. */
async function requestJson(method, url, body = undefined) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), TIMEOUT_SECONDS * 1000);
  let response;
  let text;
  try {
    response = await fetch(url, {
      method,
      body,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      cache: "no-store",
      signal: abort.signal,
    });
    text = await readText(response);
  } catch (error) {
    if (error instanceof PageError) {
      throw error;
    }
    if (error.name === "AbortError") {
      throw new PageError(`No answer from ${settings.server} within ${TIMEOUT_SECONDS} s.`);
    }
    // A server that is down and one that does not allow this page (no CORS
    // headers) look the same to a page: the browser hides the difference.
    throw new PageError(
      `Cannot reach the model server at ${settings.server}: it is not running, or it does not ` +
        "allow this page (start it with --rest_api_enable_cors_support=true, as make web does).",
    );
  } finally {
    clearTimeout(timer);
  }
  let answer;
  try {
    answer = JSON.parse(text);
  } catch {
    const type = response.headers.get("Content-Type");
    throw new PageError(
      `The answer of ${url} is not JSON (HTTP ${response.status}${type ? `, ${type}` : ""}): ` +
        `is ${settings.server} a TensorFlow Serving REST API?`,
    );
  }
  if (!response.ok) {
    const message = typeof answer?.error === "string" ? answer.error : text.slice(0, 300);
    if (response.status === 404) {
      throw new PageError(`Model not available: ${message}`);
    }
    throw new PageError(`The model server answered HTTP ${response.status}: ${message}`);
  }
  return answer;
}

/**
 * The version that answers requests for the model (or the pinned version), as
 * the model's metadata names it: predictions then go to that version, so the
 * page knows which version answered them.
 */
async function servedVersion() {
  const answer = await requestJson("GET", `${modelUrl(settings.version)}/metadata`);
  const version = answer?.model_spec?.version;
  if (typeof version !== "string" || !/^\d+$/.test(version)) {
    throw new PageError(`The metadata answer of ${settings.server} is not TensorFlow Serving's.`);
  }
  return version;
}

/** The MNIST image as a PNG data URL: grey levels in the colour channels, opaque. */
function toPngDataUrl(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d");
  const rgba = context.createImageData(image.width, image.height);
  image.pixels.forEach((value, index) => {
    rgba.data.fill(value, 4 * index, 4 * index + 3);
    rgba.data[4 * index + 3] = 255;
  });
  context.putImageData(rgba, 0, 0);
  return canvas.toDataURL("image/png");
}

/** The PNG sent to predict_png of that version: {digit, probabilities}. */
async function predict(version, pngDataUrl) {
  const body = JSON.stringify({
    signature_name: config.PNG_SIGNATURE,
    instances: [{ [config.PNG_INPUT_NAME]: { b64: pngDataUrl.slice(pngDataUrl.indexOf(",") + 1) } }],
  });
  const answer = await requestJson("POST", `${modelUrl(version)}:predict`, body);
  const prediction = answer?.predictions?.[0];
  const probabilities = prediction?.[config.PROBABILITIES_OUTPUT];
  const digit = prediction?.[config.DIGIT_OUTPUT];
  const isProbability = (value) => Number.isFinite(value) && value >= 0 && value <= 1;
  if (
    !Array.isArray(probabilities) ||
    probabilities.length !== config.NUM_CLASSES ||
    !probabilities.every(isProbability) ||
    !Number.isInteger(digit) ||
    digit < 0 ||
    digit >= config.NUM_CLASSES
  ) {
    throw new PageError(
      `The predict answer of ${settings.server} has no ${config.DIGIT_OUTPUT} and ` +
        `${config.NUM_CLASSES} ${config.PROBABILITIES_OUTPUT}: is it this project's model?`,
    );
  }
  return { digit, probabilities };
}

function showProbabilities(probabilities, digit) {
  bars.forEach((bar, index) => {
    const probability = probabilities?.[index];
    bar.textContent = probability === undefined ? "" : probability.toFixed(3);
    bar.dataset.probability = probability === undefined ? "" : String(probability);
    bar.style.setProperty("--probability", probability ?? 0);
    bar.classList.toggle("top", index === digit);
  });
}

function forgetAnswer() {
  digitText.textContent = "";
  versionText.textContent = "";
  showProbabilities(undefined, undefined);
}

async function classify() {
  latestTicket += 1;
  const ticket = latestTicket;
  const image = toMnist(inkOf(pen.getImageData(0, 0, PAD_SIZE, PAD_SIZE)));
  if (image === null) {
    return;
  }
  const pngDataUrl = toPngDataUrl(image);
  sentImage.src = pngDataUrl;
  sentImage.hidden = false;
  setStatus("Classifying…");
  try {
    const version = await servedVersion();
    const started = performance.now();
    const answer = await predict(version, pngDataUrl);
    const milliseconds = Math.round(performance.now() - started);
    if (ticket !== latestTicket) {
      return;
    }
    digitText.textContent = String(answer.digit);
    versionText.textContent = `${settings.model}, version ${version}`;
    showProbabilities(answer.probabilities, answer.digit);
    setStatus(`Version ${version} of ${settings.model} answered in ${milliseconds} ms.`);
  } catch (error) {
    if (ticket !== latestTicket) {
      return;
    }
    forgetAnswer();
    setStatus(error instanceof PageError ? error.message : `Unexpected error: ${error}`, true);
  }
}

function clear() {
  latestTicket += 1;
  stroke = null;
  pen.clearRect(0, 0, PAD_SIZE, PAD_SIZE);
  forgetAnswer();
  sentImage.hidden = true;
  sentImage.removeAttribute("src");
  if (settings !== null) {
    setStatus("Draw a digit.");
  }
}

/** The pointer's position in canvas pixels, whatever size the pad is shown at. */
function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * PAD_SIZE) / box.width,
    y: ((event.clientY - box.top) * PAD_SIZE) / box.height,
  };
}

/**
 * Draws the stroke so far as one path over the pad as it was before the
 * stroke: drawn segment by segment, the anti-aliased edges of overlapping
 * segments would pile up into beads.
 */
function drawStroke() {
  pen.putImageData(stroke.before, 0, 0);
  const [first, ...rest] = stroke.points;
  pen.beginPath();
  if (rest.length === 0) {
    pen.arc(first.x, first.y, PEN_WIDTH / 2, 0, 2 * Math.PI);
    pen.fill();
    return;
  }
  pen.moveTo(first.x, first.y);
  for (const point of rest) {
    pen.lineTo(point.x, point.y);
  }
  pen.stroke();
}

function startStroke(event) {
  // One stroke at a time: a second finger or a right click draws nothing;
  // nor does anything when the query parameters are wrong.
  if (settings === null || stroke !== null || !event.isPrimary || event.button !== 0) {
    return;
  }
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  stroke = {
    pointerId: event.pointerId,
    before: pen.getImageData(0, 0, PAD_SIZE, PAD_SIZE),
    points: [padPoint(event)],
  };
  drawStroke();
}

function continueStroke(event) {
  if (stroke === null || event.pointerId !== stroke.pointerId) {
    return;
  }
  // Fast pointers deliver several positions per event; use them all for smooth lines.
  const coalesced = event.getCoalescedEvents?.() ?? [];
  for (const each of coalesced.length > 0 ? coalesced : [event]) {
    const point = padPoint(each);
    const last = stroke.points[stroke.points.length - 1];
    // A pointer that has not moved adds nothing (and a path of one repeated
    // point would not be drawn at all, where a dot should be).
    const moved = point.x !== last.x || point.y !== last.y;
    if (moved && stroke.points.length < MAX_STROKE_POINTS) {
      stroke.points.push(point);
    }
  }
  drawStroke();
}

function endStroke(event) {
  if (stroke === null || event.pointerId !== stroke.pointerId) {
    return;
  }
  stroke = null;
  classify();
}

function setUpPad() {
  pad.width = PAD_SIZE;
  pad.height = PAD_SIZE;
  pen.lineWidth = PEN_WIDTH;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.strokeStyle = INK_COLOUR;
  pen.fillStyle = INK_COLOUR;
  pad.addEventListener("pointerdown", startStroke);
  pad.addEventListener("pointermove", continueStroke);
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  document.getElementById("clear").addEventListener("click", clear);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      clear();
    }
  });
}

/** On load: which server and model, and whether the model is there. */
async function start() {
  setUpPad();
  try {
    settings = readSettings(new URLSearchParams(window.location.search));
  } catch (error) {
    pad.classList.add("disabled");
    setStatus(error.message, true);
    return;
  }
  document.getElementById("server").textContent = `${settings.model} at ${settings.server}`;
  setStatus(`Asking ${settings.server} for ${settings.model}…`);
  try {
    const version = await servedVersion();
    if (latestTicket === 0) {
      setStatus(`Version ${version} of ${settings.model} is ready: draw a digit.`);
    }
  } catch (error) {
    if (latestTicket === 0) {
      setStatus(error.message, true);
    }
  }
}

start();
