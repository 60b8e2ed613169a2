"""Image collections held in public Git repositories, read at a pinned commit.

A :class:`RepositoryCollection` names a repository, a commit and the folders whose images
join the corpus. Files are read with git itself: from a local folder of mirrors (one
``OWNER+NAME/repo`` git directory per repository, for machines without GitHub; the
``--git-mirrors`` option or ``MONAI_DPE_GIT_MIRRORS``), or else by fetching that one commit
from the public URL into the cache once. Reading a pinned commit makes the corpus the same on
every machine, and nothing but the pinned list is committed.

Example::

    repo = open_repository(COLLECTIONS[0], mirrors="/work/.mirror")
    for member in list_members(repo, COLLECTIONS[0]):
        data = read_blob(repo, member)
"""
from __future__ import annotations

import fnmatch
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "MIRRORS_ENV",
    "MIRROR_BLOB_LIMIT",
    "RepositoryCollection",
    "RepositoryMember",
    "open_repository",
    "list_members",
    "read_blob",
    "has_blob",
    "RepositoryUnavailable",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the folder of git mirrors (``OWNER+NAME/repo`` each).
MIRRORS_ENV = "MONAI_DPE_GIT_MIRRORS"
#: Mirrors may leave out blobs of this size or more; such files are skipped and counted.
MIRROR_BLOB_LIMIT = 4 * 1024 * 1024
_GIT_TIMEOUT_S = 900


class RepositoryUnavailable(RuntimeError):
    """Raised when a collection's repository or commit cannot be reached."""


@dataclass(frozen=True)
class RepositoryCollection:
    """Images of one public dataset, as a repository holds them at one commit.

    Args:
        name: stable id of the source; corpus files go to ``<modality>/<name>/``.
        modality: the imaging modality (one of ``monai_dpe.data.sources.MODALITIES``).
        repo: ``owner/name`` on GitHub.
        commit: the pinned commit (40 hex digits).
        patterns: ``fnmatch`` patterns of the member paths to take (``src/Dataset/*/image/*.png``).
        licence: licence of the image data (it must allow sharing trained weights).
        attribution: who made the data, as the licence asks to credit them.
        split: ``"training"``, ``"validation"`` or ``"test"``; a whole collection is in one split.
        limit: take at most this many files, evenly spaced in path order (``None``: all).
        description: what the images show.
    """

    name: str
    modality: str
    repo: str
    commit: str
    patterns: tuple[str, ...]
    licence: str
    attribution: str
    split: str
    limit: int | None = None
    description: str = ""

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}.git"

    def corpus_relpath(self, stem: str, volume: bool = False) -> str:
        """A member's corpus file: ``<modality>/<name>/<stem>.png``, or ``.nii.gz`` for a NIfTI volume (kept as is)."""
        return f"{self.modality}/{self.name}/{stem}{'.nii.gz' if volume else '.png'}"

    def image_name(self, stem: str) -> str:
        """A member's id in datalists and reports: ``<name>/<stem>``."""
        return f"{self.name}/{stem}"

    @property
    def mirror_name(self) -> str:
        """Folder name of the repository in a mirror folder: ``OWNER+NAME``."""
        return self.repo.replace("/", "+")


@dataclass(frozen=True)
class RepositoryMember:
    """One image file at the pinned commit: its path, blob id and size in bytes (-1: not in this repository)."""

    path: str
    blob: str
    size: int

    @property
    def stem(self) -> str:
        """A file name stem unique within the collection: the path's parts joined by ``_``."""
        parts = PurePosixPath(self.path).with_suffix("").parts
        return "_".join(p for p in parts if p).replace(" ", "_")

    @property
    def is_volume(self) -> bool:
        """A NIfTI volume (copied into the corpus as it is) rather than a photo-format image."""
        return self.path.lower().endswith((".nii", ".nii.gz"))


def _git(git_dir: Path, *args: str, binary: bool = False) -> str | bytes:
    try:
        done = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True,
                              timeout=_GIT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise RepositoryUnavailable("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise RepositoryUnavailable(f"git {args[0]} timed out after {_GIT_TIMEOUT_S} s") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise RepositoryUnavailable(f"git {args[0]} failed: {message[-1] if message else done.returncode}")
    return done.stdout if binary else done.stdout.decode()


def _mirror_git_dir(mirrors: Path, collection: RepositoryCollection) -> Path | None:
    """The mirror's git directory: a bare ``repo`` or a work tree's ``repo/.git``."""
    root = mirrors / collection.mirror_name / "repo"
    for candidate in (root / ".git", root):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    return None


def _has_commit(git_dir: Path, commit: str) -> bool:
    try:
        _git(git_dir, "cat-file", "-e", f"{commit}^{{commit}}")
        return True
    except RepositoryUnavailable:
        return False


def open_repository(collection: RepositoryCollection, mirrors: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a git directory that holds the collection's pinned commit.

    With ``mirrors`` (or ``$MONAI_DPE_GIT_MIRRORS``) the mirror folder is used, and a mirror
    without the repository or the commit is an error: such a machine cannot reach GitHub. Without
    it, the commit alone is fetched from the public URL into ``cache_dir/git`` (once).

    Raises:
        RepositoryUnavailable: one line saying which repository or commit is missing.
    """
    mirrors = mirrors or os.environ.get(MIRRORS_ENV)
    if mirrors:
        git_dir = _mirror_git_dir(Path(mirrors), collection)
        if git_dir is None:
            raise RepositoryUnavailable(f"{collection.repo}: no mirror at {Path(mirrors) / collection.mirror_name}/repo")
        if not _has_commit(git_dir, collection.commit):
            raise RepositoryUnavailable(f"{collection.repo}: mirror {git_dir} lacks commit {collection.commit}")
        return git_dir
    if cache_dir is None:
        from monai_dpe.data.sources import default_cache_dir

        cache_dir = default_cache_dir()
    git_dir = Path(cache_dir).expanduser() / "git" / f"{collection.mirror_name}.git"
    if not (git_dir / "HEAD").is_file():
        git_dir.mkdir(parents=True, exist_ok=True)
        _git(git_dir, "init", "--bare", "--quiet")
    if not _has_commit(git_dir, collection.commit):
        logger.info("fetching %s at %s into %s", collection.url, collection.commit[:12], git_dir)
        _git(git_dir, "fetch", "--quiet", "--depth", "1", collection.url, collection.commit)
    return git_dir


def list_members(git_dir: Path, collection: RepositoryCollection) -> list[RepositoryMember]:
    """The collection's files at its commit, in path order, thinned to ``limit`` evenly."""
    listing = _git(git_dir, "ls-tree", "-r", "-l", "-z", collection.commit)
    members = []
    for line in listing.split("\0"):
        if not line:
            continue
        meta, path = line.split("\t", 1)
        _, kind, blob, size = meta.split()
        if kind == "blob" and any(fnmatch.fnmatchcase(path, p) for p in collection.patterns):
            # git prints the size of a blob the repository lacks (a mirror's big files) as "BAD"
            members.append(RepositoryMember(path, blob, int(size) if size.isdigit() else -1))
    members.sort(key=lambda m: m.path)
    if collection.limit is not None and len(members) > collection.limit:
        step = len(members) / collection.limit
        members = [members[int(i * step)] for i in range(collection.limit)]
    return members


def has_blob(git_dir: Path, member: RepositoryMember) -> bool:
    """Whether the repository holds the member's content (mirrors may leave out big blobs)."""
    try:
        _git(git_dir, "cat-file", "-e", member.blob)
        return True
    except RepositoryUnavailable:
        return False


def read_blob(git_dir: Path, member: RepositoryMember) -> bytes:
    """The member's bytes, as stored at the pinned commit."""
    return _git(git_dir, "cat-file", "blob", member.blob, binary=True)
