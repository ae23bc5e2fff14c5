"""`malenia serve`: the retraining server, and its token and model management.

    malenia serve --host 127.0.0.1 --port 8000 --data DIR      run the server (docs/server.md)
    malenia serve token add NAME --data DIR                     print a new token (shown once)
    malenia serve token revoke ID_OR_NAME --data DIR
    malenia serve token list --data DIR
    malenia serve model import MODEL_FOLDER --data DIR [--current]
    malenia serve model list --data DIR

Token and model commands work on the database directly and are safe while the server runs
(SQLite WAL; a revoked token is refused from its next request on).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the retraining server (corrections -> fine-tuning -> model versions)",
                       description="Runs the retraining server, or manages its tokens and model versions.")
    _data_arg(p, required=False)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--launcher", choices=["auto", "torchrun", "python"], help="how jobs start `malenia train`")
    p.add_argument("--gpus", type=int, help="GPUs per job (default: all local CUDA devices)")
    p.add_argument("--nnodes", type=int, help="nodes per job (torchrun rendezvous; see docs/server.md)")
    p.add_argument("--rdzv-endpoint", help="HOST:PORT of the torchrun rendezvous for multi-node jobs")
    p.add_argument("--train-config", help="model configuration jobs train (default: the base model's own config.json)")
    p.add_argument("--train-command", help="replaces `python -m malenia.cli train` (a quoted command line)")
    p.add_argument("--promotion", choices=["not_worse", "always", "never"], help="when a new version becomes current")
    p.add_argument("--base-model", help="model folder imported as the first version (default: the built-in model)")
    p.add_argument("--replay-dataset", help="a dataset of earlier training data offered to jobs for replay")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    tok = actions.add_parser("token", help="add, revoke or list access tokens")
    tok_actions = tok.add_subparsers(dest="token_action", metavar="token ACTION", required=True)
    t_add = tok_actions.add_parser("add", help="create a token (printed once, stored hashed)")
    t_add.add_argument("name")
    t_rev = tok_actions.add_parser("revoke", help="revoke a token by id or name")
    t_rev.add_argument("token")
    t_list = tok_actions.add_parser("list", help="list tokens (never their secrets)")
    for q in (t_add, t_rev, t_list):
        _data_arg(q, required=False, suppress=True)
        q.set_defaults(func=run_token)

    mod = actions.add_parser("model", help="import or list model versions")
    mod_actions = mod.add_subparsers(dest="model_action", metavar="model ACTION", required=True)
    m_imp = mod_actions.add_parser("import", help="register a model folder as a new version")
    m_imp.add_argument("folder", type=Path)
    m_imp.add_argument("--current", action="store_true", help="also make it the current version")
    m_list = mod_actions.add_parser("list", help="list model versions")
    for q in (m_imp, m_list):
        _data_arg(q, required=False, suppress=True)
        q.set_defaults(func=run_model)


def _data_arg(p: argparse.ArgumentParser, required: bool, suppress: bool = False) -> None:
    p.add_argument("--data", type=Path, required=required, default=argparse.SUPPRESS if suppress else None,
                   help="the server's data folder (database, cases, model versions, job runs)")


def _data(args) -> Path:
    from malenia.errors import InputError

    data = getattr(args, "data", None)
    if data is None:
        raise InputError("--data DIR is required (the server's data folder)")
    return Path(data).expanduser()


def run(args) -> int:
    import uvicorn

    from malenia.errors import InputError
    from malenia.server.app import QuerylessAccessLog, create_app
    from malenia.server.config import load_config
    from malenia.server.service import TrainingService

    data = _data(args)
    overrides = {"launcher": args.launcher, "gpus": args.gpus, "nnodes": args.nnodes,
                 "rdzv_endpoint": args.rdzv_endpoint, "train_config": args.train_config,
                 "train_command": shlex.split(args.train_command) if args.train_command else None,
                 "promotion": args.promotion, "base_model": args.base_model, "replay_dataset": args.replay_dataset}
    cfg = load_config(data, overrides)
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be 1..65535, got {args.port}")
    service = TrainingService(cfg)
    for note in service.startup_notes:
        print(f"malenia serve: {note}", flush=True)
    if service.tokens.count() == 0:
        _first_token(service, data)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("malenia serve: listening beyond this machine: use TLS (a reverse proxy) outside a trusted network, "
              "tokens travel in the Authorization header", file=sys.stderr, flush=True)
    print(f"malenia serve: http://{args.host}:{args.port} (data {cfg.data_dir}); "
          f"current model {service.registry.current() or 'none'}", flush=True)
    app = create_app(service)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10)
    logging.getLogger("uvicorn.access").addFilter(QuerylessAccessLog())  # after Config: it sets up logging
    uvicorn.Server(config).run()
    return 0


TOKEN_FILE = "initial_token.txt"


def _first_token(service, data: Path) -> None:
    """The first token goes to the terminal only; with output captured (a service, a log file) it is written
    to DATA/initial_token.txt, mode 0600, and only that path is printed."""
    token, _ = service.tokens.add("initial")
    more = f"malenia serve: more tokens: `malenia serve token add NAME --data {data}`"
    if sys.stdout.isatty():
        print("malenia serve: first start: created an access token. It is shown only now and stored hashed:\n"
              f"    {token}\n{more}", flush=True)
        return
    path = Path(service.layout.root) / TOKEN_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    print(f"malenia serve: first start: created an access token and wrote it to {path} (readable by this user only; "
          f"output is not a terminal, so it is not printed). Copy it, then delete the file.\n{more}", flush=True)


def run_token(args) -> int:
    from malenia.server.store import Store
    from malenia.server.tokens import TokenStore

    layout = _server_layout(args, create=args.token_action == "add")
    tokens = TokenStore(Store(layout.db))
    if args.token_action == "add":
        token, info = tokens.add(args.name)
        print(f"token {info.id} ({info.name}); shown only now:\n{token}")
    elif args.token_action == "revoke":
        for info in tokens.revoke(args.token):
            print(f"revoked token {info.id} ({info.name})")
    else:
        for info in tokens.list():
            state = f"revoked {_when(info.revoked)}" if info.revoked else "active"
            used = _when(info.last_used) if info.last_used else "never"
            print(f"{info.id}  {info.name:<24} created {_when(info.created)}  last used {used}  {state}")
    return 0


def run_model(args) -> int:
    from malenia.server.store import Store
    from malenia.server.versions import Registry

    layout = _server_layout(args, create=args.model_action == "import")
    registry = Registry(Store(layout.db), layout)
    if args.model_action == "import":
        version = registry.register(args.folder.expanduser().resolve(), parent=None, job_id=None, metrics={},
                                    notes=[f"imported from {args.folder}"])
        if args.current or registry.current() is None:
            registry.promote(version["name"], "imported with `malenia serve model import`")
        print(f"imported {args.folder} as {version['name']}" + (" (current)" if registry.current() == version["name"] else ""))
    else:
        current = registry.current()
        for v in registry.list():
            dsc = v["metrics"].get("val_dsc")
            print(f"{v['name']:<6} {'*' if v['name'] == current else ' '} {_when(v['created'])}  parent {v['parent'] or '-':<6} "
                  f"val DSC {dsc if dsc is not None else '-'}  {v['notes'][-1] if v['notes'] else ''}")
    return 0


def _server_layout(args, create: bool):
    """The server's data folder: made by the actions that add to it; the others (list, revoke) read an existing
    one, so that a mistyped --data does not make an empty server and list nothing."""
    from malenia.errors import InputError
    from malenia.server.layout import Layout

    layout = Layout(_data(args))
    if create:
        layout.create()
    elif not layout.db.is_file():
        raise InputError(f"{layout.root} is not a server data folder (no {layout.db.name})")
    return layout


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"
