// A drawing turned into an MNIST digit, as code/mnist_serving/preprocessing/
// turns a clean drawing: crop to the ink, fit the longer side to 20 pixels
// keeping the aspect ratio (area averaging), brightest pixel 255, and place it
// in a 28x28 image with its centre of mass on pixel IMAGE_SIZE / 2, white on
// black. The steps, sizes and rounding are that package's, so both give the
// same pixels. The steps for photos (noise, lighting, polarity) have nothing
// to do on a clean pad; the one that brings a pen's stroke width closer to
// MNIST's is left out too: the pad's pen has MNIST's width for a digit from
// about 45% to 90% of the pad's height (app.js), and drawn smaller its strokes
// come out bolder than the client would make them.
//
// Images here are {width, height, pixels}: one byte per pixel, row by row.

import { DIGIT_BOX_SIZE, IMAGE_SIZE, PIXEL_MAX } from "./config.js";

// A drawing larger than this is cropped where its anti-aliased edge is half-way
// up, not at its faintest pixel, as preprocessing/ crops a large digit whose
// strokes have MNIST's width.
const LARGE_DIGIT = 2 * DIGIT_BOX_SIZE;
const HALF_WAY = 128;
// preprocessing.CENTRE: where the centre of mass goes, in OpenCV's pixel
// coordinates (pixel (row, column) is the point (column, row)).
const CENTRE = IMAGE_SIZE / 2;

/** The ink of a canvas's ImageData: its opacity (the pad is drawn on a transparent canvas). */
export function inkOf(imageData) {
  const { width, height, data } = imageData;
  const pixels = new Uint8Array(width * height);
  for (let index = 0; index < pixels.length; index += 1) {
    pixels[index] = data[4 * index + 3];
  }
  return { width, height, pixels };
}

/** The 28x28 MNIST image of the ink, or null when nothing is drawn. */
export function toMnist(ink) {
  let box = boundingBox(ink, 1);
  if (box === null) {
    return null;
  }
  if (Math.max(box.width, box.height) > LARGE_DIGIT) {
    box = boundingBox(ink, HALF_WAY) ?? box;
  }
  return centreByMass(fitToBox(crop(ink, box)));
}

/** Python's round(): halves go to the even neighbour (round(2.5) == 2), as in preprocessing/ and OpenCV. */
function roundHalfEven(value) {
  const rounded = Math.round(value);
  return Math.abs(value % 1) === 0.5 && rounded % 2 !== 0 ? rounded - 1 : rounded;
}

function toByte(value) {
  return Math.min(PIXEL_MAX, Math.max(0, roundHalfEven(value)));
}

/** The smallest rectangle holding every pixel >= threshold, or null. */
function boundingBox(image, threshold) {
  let left = image.width;
  let right = -1;
  let top = image.height;
  let bottom = -1;
  for (let y = 0; y < image.height; y += 1) {
    for (let x = 0; x < image.width; x += 1) {
      if (image.pixels[y * image.width + x] >= threshold) {
        left = Math.min(left, x);
        right = Math.max(right, x);
        top = Math.min(top, y);
        bottom = y;
      }
    }
  }
  if (right < 0) {
    return null;
  }
  return { left, top, width: right - left + 1, height: bottom - top + 1 };
}

function crop(image, box) {
  const pixels = new Uint8Array(box.width * box.height);
  for (let y = 0; y < box.height; y += 1) {
    const start = (box.top + y) * image.width + box.left;
    pixels.set(image.pixels.subarray(start, start + box.width), y * box.width);
  }
  return { width: box.width, height: box.height, pixels };
}

/** The longer side scaled to DIGIT_BOX_SIZE, the aspect ratio kept, the brightest pixel made 255. */
function fitToBox(image) {
  const longer = Math.max(image.width, image.height);
  let fitted = image;
  if (longer !== DIGIT_BOX_SIZE) {
    const scale = DIGIT_BOX_SIZE / longer;
    const size = (side) => Math.min(DIGIT_BOX_SIZE, Math.max(1, roundHalfEven(side * scale)));
    fitted = resizeByArea(image, size(image.width), size(image.height));
  }
  const brightest = Math.max(...fitted.pixels);
  if (brightest > 0 && brightest < PIXEL_MAX) {
    fitted.pixels = fitted.pixels.map((value) => toByte((value * PIXEL_MAX) / brightest));
  }
  return fitted;
}

/**
 * For each target pixel along one axis, the source pixels it covers and the
 * share of each: the target pixel spans [t * scale, (t + 1) * scale) of the
 * source, as in OpenCV's INTER_AREA.
 */
function areaWeights(sourceSize, targetSize) {
  const scale = sourceSize / targetSize;
  const weights = [];
  for (let target = 0; target < targetSize; target += 1) {
    const start = target * scale;
    const end = start + scale;
    const shares = [];
    for (let source = Math.floor(start); source < Math.min(Math.ceil(end), sourceSize); source += 1) {
      const overlap = Math.min(end, source + 1) - Math.max(start, source);
      if (overlap > 1e-9) {
        shares.push([source, overlap / scale]);
      }
    }
    weights.push(shares);
  }
  return weights;
}

/** Area-averaging resize (cv2.INTER_AREA): each target pixel is the mean of the source area it covers. */
function resizeByArea(image, width, height) {
  const columns = areaWeights(image.width, width);
  const rows = areaWeights(image.height, height);
  const across = new Float64Array(image.height * width);
  for (let y = 0; y < image.height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      let sum = 0;
      for (const [source, share] of columns[x]) {
        sum += share * image.pixels[y * image.width + source];
      }
      across[y * width + x] = sum;
    }
  }
  const pixels = new Uint8Array(width * height);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      let sum = 0;
      for (const [source, share] of rows[y]) {
        sum += share * across[source * width + x];
      }
      pixels[y * width + x] = toByte(sum);
    }
  }
  return { width, height, pixels };
}

/**
 * The digit in an IMAGE_SIZE square, moved by whole pixels so that its centre
 * of mass is on CENTRE; null when no ink is left (a faint speck averaged away).
 */
function centreByMass(digit) {
  let mass = 0;
  let massX = 0;
  let massY = 0;
  for (let y = 0; y < digit.height; y += 1) {
    for (let x = 0; x < digit.width; x += 1) {
      const value = digit.pixels[y * digit.width + x];
      mass += value;
      massX += x * value;
      massY += y * value;
    }
  }
  if (mass === 0) {
    return null;
  }
  const clamp = (value, largest) => Math.min(Math.max(value, 0), largest);
  const left = clamp(roundHalfEven(CENTRE - massX / mass), IMAGE_SIZE - digit.width);
  const top = clamp(roundHalfEven(CENTRE - massY / mass), IMAGE_SIZE - digit.height);
  const pixels = new Uint8Array(IMAGE_SIZE * IMAGE_SIZE);
  for (let y = 0; y < digit.height; y += 1) {
    const row = digit.pixels.subarray(y * digit.width, (y + 1) * digit.width);
    pixels.set(row, (top + y) * IMAGE_SIZE + left);
  }
  return { width: IMAGE_SIZE, height: IMAGE_SIZE, pixels };
}
