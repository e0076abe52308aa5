"""Index specs (FAISS ``index_factory`` strings) checked before FAISS sees them.

FAISS builds whatever a factory string asks for: ``IVF30000000,Flat`` allocates
30 million inverted lists (gigabytes) at once, ``HNSW0`` builds an index that
fails later on every call, ``IVF0,Flat`` one whose every search fails. So a
spec is parsed here first, component by component, and every number in it is
bounded; only then does ``embedserve.store.index`` hand it to FAISS.

Grammar (components separated by commas, in the order FAISS takes them)::

    spec        = transform* , main [, refine]
    transform   = PCA[W][R]<d> | OPQ<m>[_<d>] | RR<d> | ITQ[<d>] | L2norm
    main        = Flat | HNSW<M>[_<storage>] [, <storage>] | IVF<nlist>[_HNSW<M>] , (Flat | <code>)
                | <code> | LSH[r][t]
    code        = PQ<m>[x<nbits>][fs|fsr][np] | SQ4 | SQ6 | SQ8 | SQfp16 | SQbf16
                | RQ<m>x<nbits> | LSQ<m>x<nbits>
    storage     = Flat | SQ... | PQ<m>[x<nbits>]
    refine      = RFlat | Refine(<code> | Flat)

Bounds: output dims of transforms 1..dim; HNSW M 4..max_hnsw_m; IVF nlist
1..max_ivf_lists; PQ/RQ/LSQ m 1..dim and nbits 1..12 (2**12 centroids per
codebook). IDMap/IDMap2 are refused: the store assigns FAISS ids itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from embedserve.errors import InvalidArgument, quote
from embedserve.limits import Limits

MAX_SPEC_CHARS = 200
MAX_CODE_BITS = 12
MIN_HNSW_M = 4

_SQ = r"SQ(?:4|6|8|fp16|bf16)"
_PQ = r"PQ(?P<m>\d+)(?:x(?P<nbits>\d+))?(?:fs|fsr)?(?:np)?"
_AQ = r"(?:RQ|LSQ)(?P<m>\d+)x(?P<nbits>\d+)"


class _Component:
    def __init__(self, role: str, pattern: str, check: Callable[[re.Match, int, Limits], str | None]):
        self.role = role
        self.pattern = re.compile(pattern)
        self.check = check


def _between(name: str, value: str | None, low: int, high: int, limit: str = "") -> str | None:
    if value is None:
        return None
    n = int(value)
    if low <= n <= high:
        return None
    where = f" ({limit})" if limit else ""
    return f"{name} {value} is outside {low}..{high}{where}"


def _first(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)


def _code(m: re.Match, dim: int, limits: Limits) -> str | None:
    if "m" not in m.groupdict() or m.group("m") is None:
        return None  # SQ: no parameters
    return _first(
        _between("the number of sub-quantizers", m.group("m"), 1, dim, "the vectors' dim"),
        _between("bits per code", m.group("nbits"), 1, MAX_CODE_BITS),
    )


_COMPONENTS = [
    _Component(
        "transform",
        r"(?:PCAW?R?|RR|ITQ)(?P<d>\d+)?",
        lambda m, dim, lim: _between("the output dim", m.group("d"), 1, dim, "the vectors' dim"),
    ),
    _Component(
        "transform",
        r"OPQ(?P<m>\d+)(?:_(?P<d>\d+))?",
        lambda m, dim, lim: _first(
            _between("the number of sub-spaces", m.group("m"), 1, dim, "the vectors' dim"),
            _between("the output dim", m.group("d"), 1, dim, "the vectors' dim"),
        ),
    ),
    _Component("transform", r"L2norm", lambda m, dim, lim: None),
    _Component("main", r"Flat", lambda m, dim, lim: None),
    _Component(
        "graph",
        rf"HNSW(?P<M>\d+)(?:_(?:Flat|{_SQ}|PQ(?P<m>\d+)(?:x(?P<nbits>\d+))?))?",
        lambda m, dim, lim: _first(
            _between("HNSW M", m.group("M"), MIN_HNSW_M, lim.max_hnsw_m, "max_hnsw_m"), _code(m, dim, lim)
        ),
    ),
    _Component(
        "coarse",
        r"IVF(?P<nlist>\d+)(?:_HNSW(?P<M>\d+))?",
        lambda m, dim, lim: _first(
            _between("the IVF list count", m.group("nlist"), 1, lim.max_ivf_lists, "max_ivf_lists"),
            _between("HNSW M", m.group("M"), MIN_HNSW_M, lim.max_hnsw_m, "max_hnsw_m"),
        ),
    ),
    _Component("main", _PQ, _code),
    _Component("main", _AQ, _code),
    _Component("main", _SQ, lambda m, dim, lim: None),
    _Component("main", r"LSHr?t?", lambda m, dim, lim: None),
    _Component("refine", r"RFlat|Refine\((?:Flat|" + _SQ + r")\)", lambda m, dim, lim: None),
    _Component("refine", r"Refine\(" + _PQ + r"\)", _code),
]


def check_index_spec(spec: object, dim: int, limits: Limits) -> str:
    """``spec`` if it parses and every parameter is in bounds; InvalidArgument naming the part otherwise."""
    if not isinstance(spec, str) or not spec:
        raise InvalidArgument("index_spec must be a non-empty string")
    if len(spec) > MAX_SPEC_CHARS:
        raise InvalidArgument(f"index_spec {quote(spec)} is over {MAX_SPEC_CHARS} characters")
    parts = spec.split(",")
    roles = []
    for position, part in enumerate(parts):
        if part in ("IDMap", "IDMap2"):
            raise InvalidArgument(
                f"index_spec {quote(spec)}: '{part}' is not supported: the store assigns FAISS ids itself"
            )
        for component in _COMPONENTS:
            match = component.pattern.fullmatch(part)
            if match is None:
                continue
            problem = component.check(match, dim, limits)
            if problem:
                raise InvalidArgument(f"index_spec {quote(spec)}: in '{quote(part, 40)[1:-1]}': {problem}")
            roles.append(component.role)
            break
        else:
            raise InvalidArgument(
                f"index_spec {quote(spec)}: component {position} {quote(part, 40)} is not one the store "
                "supports (Flat, HNSW<M>, IVF<n>,<Flat|PQ|SQ>, PQ<m>[x<bits>], SQ8, RQ/LSQ<m>x<bits>, LSH, "
                "PCA/OPQ/RR/L2norm transforms, RFlat/Refine(...))"
            )
    _check_order(spec, roles)
    return spec


def _check_order(spec: str, roles: list[str]) -> None:
    """transform*, then one index: an IVF coarse quantizer and its list encoding, an HNSW graph and
    optionally its storage, or a plain one (Flat, PQ, SQ, ...); an optional refine last."""
    order = {"transform": 0, "coarse": 1, "graph": 1, "main": 2, "refine": 3}
    ranks = [order[r] for r in roles]
    mains, outer = roles.count("main"), roles.count("coarse") + roles.count("graph")
    valid_index = outer <= 1 and (mains == 1 or (mains == 0 and "graph" in roles))
    if ranks != sorted(ranks) or not valid_index:
        raise InvalidArgument(
            f"index_spec {quote(spec)}: expected transforms, then one index (an IVF list count is "
            "followed by its list encoding, e.g. 'IVF1024,Flat'), then an optional refine"
        )
    if roles.count("refine") > 1:
        raise InvalidArgument(f"index_spec {quote(spec)}: at most one refine step")
