"""
The measurements that need a process of their own, each printed as one JSON line:

    python -m retina_plugin.benchmark.probe memory --candidate NAME --device cpu --anchors M --classes K
    python -m retina_plugin.benchmark.probe compile --device cpu --anchors M --classes K

``memory``: {"peak_mib": extra peak memory of one fwd+bwd of a loss candidate}; ``compile``:
{"compile_s": one-time compile cost of the fused loss}. :mod:`.loss_speed` runs them.
"""

import argparse
import json

from .loss_speed import LOSS_CANDIDATES, LossProblem, measure_compile_cost, measure_peak_memory


def main(argv=None):
    parser = argparse.ArgumentParser(description="A benchmark measurement in a fresh process.")
    parser.add_argument("measurement", choices=("memory", "compile"))
    parser.add_argument("--candidate", choices=tuple(LOSS_CANDIDATES), help="for memory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--anchors", type=int, required=True)
    parser.add_argument("--classes", type=int, required=True)
    args = parser.parse_args(argv)
    problem = LossProblem(args.anchors, args.classes, args.device)
    if args.measurement == "memory":
        if args.candidate is None:
            parser.error("memory needs --candidate")
        print(json.dumps({"peak_mib": measure_peak_memory(args.candidate, problem)}))
    else:
        print(json.dumps({"compile_s": measure_compile_cost(problem)}))


if __name__ == "__main__":
    main()
