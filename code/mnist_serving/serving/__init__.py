"""model_server.py's server: TF Serving's REST API, without Docker.

The modules, from the network inwards:

- `server`: the assembly: one asyncio event loop, start-up in TF Serving's
  order, signals and clean stop.
- `rest`: the REST transport on aiohttp: routes, CORS, access log, bodies.
- `rest_codec`, `json_tensors`, `json_text`: TF Serving's JSON: request
  bodies to tensors, predictions and errors to JSON, with its messages.
- `data_plane`: what every transport calls: models, batching, the bounded
  pool of worker threads that runs TensorFlow, metrics.
- `limits`: what one request may cost (images, pixels of encoded images) and
  the images in flight across requests, each request with its deadline;
  checked by the data plane.
- `manager`, `versions`, `loaded_version`: model versions on disk, polled,
  loaded, warmed up, labelled and unloaded as TF Serving does.
- `batching`, `metrics`: server-side batching and Prometheus metrics.
- `options`, `model_config`, `config_protos`, `errors`: the typed options
  built once from the flags, the config files, and the two error types.
"""
