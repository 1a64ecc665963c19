"""The comparator: a cloud built the thesis's way, for the benchmarks only.

    python benchmarks/thesis_server.py --port 18700 [--models alexnet,mnist_cnn]

A Flask app (werkzeug's threaded server, one thread per request, as ``app.run`` gives) with one
route, ``POST /offload``: a JSON body ``{"tensor": "<base64 of little-endian float32>",
"splitting_point": 14, "model": "alexnet"}``, the tensor's shape known from the model and split
point, answered with the output as a JSON list and the top-1 class. It runs the same tails as
edgesplit (same models, same ``SplitModel``), so what the benchmarks compare is the serving:
framework, encoding and batching. Single-tensor cuts only, as in the thesis.
"""

from __future__ import annotations

import argparse
import base64
import logging
import time

import numpy as np
import torch
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel


def create_thesis_app(models: list[str]) -> Flask:
    """The Flask app: every model loaded once, ``/offload`` runs one tail per request."""
    splits = {name: SplitModel(zoo.build_model(name), zoo.sample_input(name)) for name in models}
    app = Flask("thesis-cloud")

    @app.get("/health")
    def health() -> ResponseReturnValue:
        return jsonify(ready=True)

    @app.post("/offload")
    def offload() -> ResponseReturnValue:
        received = time.perf_counter()
        body = request.get_json()
        split = splits[body["model"]]
        sp = int(body["splitting_point"])
        shape = split.split_points[sp].tensors[0].shape
        raw = base64.b64decode(body["tensor"])
        tensor = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy().reshape(shape))
        output = split.tail([tensor], sp)
        return jsonify(output=output.reshape(-1).tolist(),
                       prediction=int(output.reshape(output.shape[0], -1).argmax(1)[0]),
                       cloud_s=time.perf_counter() - received)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--models", default="alexnet,mnist_cnn")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    app = create_thesis_app(args.models.split(","))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request, as ours
    app.run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
