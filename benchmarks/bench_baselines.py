"""Side by side on one class (or every class): PatchCore, the pose ablations, the full pipeline, the NeRF at the
true pose and a fused map, on the same test set with the same metric code.

    pip install -r requirements-baselines.txt        # anomalib, for the PatchCore and fused rows
    python -m benchmarks.bench_baselines --config configs/synthetic/demo.txt
    python -m benchmarks.bench_baselines --config configs/synthetic/demo.txt --synth_seed 1 --class_name demo_s1
    python -m benchmarks.bench_baselines --config configs/LEGO-3D/01Gorilla.txt --class_name all
    python -m benchmarks.bench_baselines --config configs/LEGO-3D/01Gorilla.txt --class_name all --launcher slurm
    python -m benchmarks.bench_baselines --config configs/synthetic/demo.txt --patchcore false   # without anomalib
    python -m benchmarks.bench_baselines --config configs/synthetic/demo.txt --rd_steps 800 --rd_nerf_views 200

The reverse-distillation rows (anomaly.reverse_distillation: OmniAD's base model and its additions, one row each)
train a student per row under the class's checkpoint folder (resumed when interrupted; `--reverse_distillation
false` leaves them out). Makes the pipeline's maps first when they are missing (trains the NeRF if needed), then
scores every row
(omniposead.baselines: what each row is, the fused rule, what the times count). Prints one markdown table
and writes it with a CSV and the raw figures to <output_dir>/baselines.{md,csv,json} per class, and with
`--class_name all` (or `a,b`) to <output_root>/<dataset>/baselines.{md,csv,json} for all classes (a failing
class is listed and skipped). With `--launcher local | slurm` each class is its own job (omniposead.launcher).
"""
from __future__ import annotations

import json
import platform
import sys
import time

import torch

from anomaly.patchcore import PatchcoreOptions
from anomaly.reverse_distillation import DistillationOptions
from common.errors import exit_on_user_error
from common.options import str2bool
from common.runtime import resolve_device, seed_everything
from omniposead.baselines import TABLE_NAME, compare_class, markdown_table, write_tables
from omniposead.classes import ALL, exit_code, run_classes
from omniposead.config import OmniposeConfig, build_parser
from omniposead.launcher import launch


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__.splitlines()[0])
    PatchcoreOptions.add_args(parser)
    parser.add_argument("--patchcore", type=str2bool, nargs="?", const=True, default=True,
                        help="run the PatchCore and fused rows (needs anomalib: requirements-baselines.txt)")
    DistillationOptions.add_args(parser)
    parser.add_argument("--reverse_distillation", type=str2bool, nargs="?", const=True, default=True,
                        help="run the reverse-distillation rows (a student trained per row, resumable, under the "
                             "class's checkpoint folder)")
    args = parser.parse_args(argv)
    cfg = OmniposeConfig.from_namespace(args)
    pc_opts = PatchcoreOptions.from_config(args) if args.patchcore else None
    rd_opts = DistillationOptions.from_config(args) if args.reverse_distillation else None
    device = resolve_device(cfg.run.device)
    header = (f"machine: {machine(device)}; date: {time.strftime('%Y-%m-%d %H:%M')}; command: python -m "
              f"benchmarks.bench_baselines {' '.join(argv if argv is not None else sys.argv[1:])}\n\n")
    tables = []

    def one_class(name: str) -> None:
        class_cfg = cfg.for_class(name)
        seed_everything(class_cfg.run.seed)
        table = compare_class(class_cfg, pc_opts, device, rd_opts=rd_opts)
        tables.append(table)
        paths = write_tables(class_cfg.run.output_dir / TABLE_NAME, [table], header)
        print(markdown_table([table]), end="")
        print(f"[{name}] wrote {', '.join(str(p) for p in paths)}")

    if cfg.launcher.launcher != "inline":           # one job per class; its table is read back from its files
        outcomes = launch(cfg, "benchmarks.bench_baselines", list(sys.argv[1:] if argv is None else argv),
                          "baselines", table=False)
        tables = [json.loads((cfg.run.for_class(o.name).output_dir / f"{TABLE_NAME}.json").read_text())["tables"][0]
                  for o in outcomes if o.ok]
    else:
        outcomes = run_classes(cfg.run.data_root, cfg.run.class_name, one_class, "baselines")
    if (cfg.run.class_name == ALL or "," in cfg.run.class_name) and tables:
        paths = write_tables(cfg.run.dataset_output_dir / TABLE_NAME, tables, header)
        print(header + markdown_table(tables), end="")
        print(f"wrote {', '.join(str(p) for p in paths)}")
    return exit_code(outcomes)


if __name__ == "__main__":
    sys.exit(main())
