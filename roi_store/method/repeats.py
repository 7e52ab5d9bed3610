"""Repeats over seeds: one ``embed`` or ``fit-lstm`` per seed, as runs ``NAME-s1``, ``NAME-s2``, ...

``roistore report STORE --run-group NAME-s`` then pools them (mean, standard deviation, range).
Each seed's run is an ordinary run: a complete one is left as it is, an interrupted one
resumes, one made with other settings is refused, exactly as when the command is run by hand.
"""

from __future__ import annotations

from collections.abc import Callable

from roi_store.errors import ConfigError
from roi_store.store.runs import check_run_name


def parse_seeds(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``.

    Raises
    ------
    ConfigError
        If an item is not a whole number >= 0, or a seed is repeated.
    """
    items = [t.strip() for t in str(text).split(",")]
    if not all(t.isdigit() for t in items):
        raise ConfigError(f"invalid --seeds {text!r}: give whole numbers >= 0 separated by commas, such as 1,2,3")
    seeds = [int(t) for t in items]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"invalid --seeds {text!r}: a seed is repeated; give each seed once")
    return seeds


def _each_seed(fn: Callable, what: str, store_path: str, run: str, seeds, seed, log, options: dict) -> list[dict]:
    if seed is not None:
        raise ConfigError(f"--seeds and --seed exclude each other: --seeds {','.join(map(str, seeds or []))} names "
                          f"runs {run}-s<seed>, each with its own seed; drop --seed")
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else list(seeds)
    if not seeds:
        raise ConfigError("--seeds needs at least one seed, such as 1,2,3")
    names = [check_run_name(f"{run}-s{s}") for s in seeds]  # every name checked before any work
    say = log or (lambda msg: None)
    out = []
    for k, (name, s) in enumerate(zip(names, seeds), start=1):
        say(f"{what} {name} (seed {s}, {k}/{len(seeds)})")
        out.append(fn(store_path, name, seed=s, log=log, **options))
    return out


def embed_seeds(store_path: str, run: str, seeds, *, seed: int | None = None,
                log: Callable[[str], None] | None = None, **options) -> list[dict]:
    """:func:`roi_store.method.embed.embed` once per seed, as run ``<run>-s<seed>`` with that seed.

    Parameters
    ----------
    store_path : str
        The store folder.
    run : str
        The runs' common prefix (``NAME`` gives ``NAME-s1``, ``NAME-s2``, ...).
    seeds : str or list of int
        ``"1,2,3"`` or ``[1, 2, 3]``.
    seed : None
        Must stay None: each run takes its seed from ``seeds``.
    log : callable, optional
        Receives progress lines.
    **options
        Every other argument of :func:`roi_store.method.embed.embed`.

    Returns
    -------
    list of dict
        Each seed's run document, in the order of ``seeds``.

    Raises
    ------
    ConfigError
        If ``seed`` is given too, or ``seeds`` is malformed; any error of ``embed`` for a seed
        (the seeds before it are kept).
    """
    from roi_store.method.embed import embed

    return _each_seed(embed, "embed", store_path, run, seeds, seed, log, options)


def fit_lstm_seeds(store_path: str, run: str, seeds, *, seed: int | None = None,
                   log: Callable[[str], None] | None = None, **options) -> list[dict]:
    """:func:`roi_store.method.head.fit_lstm` once per seed, on run ``<run>-s<seed>`` with that seed.

    The runs are those :func:`embed_seeds` made; ``options`` are every other argument of
    :func:`roi_store.method.head.fit_lstm` (a head-only control is made per seed run). Returns each
    seed's head document; raises as :func:`embed_seeds`.
    """
    from roi_store.method.head import fit_lstm

    if options.get("control_run"):
        raise ConfigError("--control-run names one run: with --seeds each control takes its default name")
    return _each_seed(fit_lstm, "fit-lstm", store_path, run, seeds, seed, log, options)
