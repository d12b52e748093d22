// The facts of code/mnist_serving/config.py that the page needs, with the same
// names and values (tests/test_web_page.py checks that they agree).

export const MODEL_NAME = "my_digit_classifier";
export const DEFAULT_SERVER_URL = "http://localhost:8501";
export const IMAGE_SIZE = 28;
export const DIGIT_BOX_SIZE = 20;
export const NUM_CLASSES = 10;
export const PIXEL_MAX = 255.0;
export const PNG_INPUT_NAME = "image_png";
export const PROBABILITIES_OUTPUT = "probabilities";
export const DIGIT_OUTPUT = "digit";
export const PNG_SIGNATURE = "predict_png";
