#!/usr/bin/env python3
"""A pass-through FUSE file system whose fsync takes a set time: a slow disk on demand.

    slowfs.py BACKING_DIR MOUNTPOINT --fsync-ms 200

Everything is done on BACKING_DIR as asked, except that every fsync and fdatasync (of a file or
of a directory) first sleeps --fsync-ms, then syncs the backing file for real. Writes land in
the backing file system's page cache, as on a real disk; only the sync is slow, which is what
an SD card or a busy drive does to a process that syncs. Used by scripts/bench_slow_fsync.sh to
show that the MQTT disk queue's fsync no longer delays the reject gate.

Why FUSE: the device-mapper `delay` target (a real slow block device) needs device-mapper in the
kernel, which this project's machines do not have (`dmsetup targets` fails: no
/dev/mapper/control); FUSE is there (/dev/fuse). Needs root (or fusermount3) and mfusepy
(PyPI, ctypes bindings to libfuse3, Debian's libfuse3-3). Runs in the foreground until
unmounted (umount MOUNTPOINT) or interrupted.
"""

import argparse
import errno
import os
import threading
import time

import mfusepy as fuse


class SlowSync(fuse.Operations):
    use_ns = True

    def __init__(self, root: str, fsync_s: float):
        self.root = os.path.realpath(root)
        self.fsync_s = fsync_s
        self.syncs = 0
        self.mu = threading.Lock()

    def _p(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _slow(self):
        with self.mu:
            self.syncs += 1
        time.sleep(self.fsync_s)

    # Files and folders: passed through.
    def access(self, path, amode):
        if not os.access(self._p(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path, mode):
        os.chmod(self._p(path), mode)
        return 0

    def chown(self, path, uid, gid):
        os.chown(self._p(path), uid, gid)
        return 0

    def getattr(self, path, fh=None):
        st = os.lstat(self._p(path))
        keys = ("st_atime_ns", "st_ctime_ns", "st_gid", "st_mode", "st_mtime_ns", "st_nlink", "st_size", "st_uid")
        out = {k: getattr(st, k) for k in keys}
        # mfusepy takes times in ns under these names when use_ns is set.
        for k in ("st_atime", "st_ctime", "st_mtime"):
            out[k] = out.pop(k + "_ns")
        return out

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._p(path))

    def mkdir(self, path, mode):
        os.mkdir(self._p(path), mode)
        return 0

    def rmdir(self, path):
        os.rmdir(self._p(path))
        return 0

    def unlink(self, path):
        os.unlink(self._p(path))
        return 0

    def rename(self, old, new):
        os.rename(self._p(old), self._p(new))
        return 0

    def statfs(self, path):
        sv = os.statvfs(self._p(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(sv, k) for k in keys}

    def utimens(self, path, times=None):
        os.utime(self._p(path), ns=times)
        return 0

    def truncate(self, path, length, fh=None):
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._p(path), length)
        return 0

    # The kernel gives every write its offset (the end, for a file opened to append), so the
    # backing file is opened without O_APPEND: Linux's pwrite would ignore the offset with it.
    def open(self, path, flags):
        return os.open(self._p(path), flags & ~os.O_APPEND)

    def create(self, path, mode, flags=os.O_WRONLY):
        return os.open(self._p(path), (flags & ~os.O_APPEND) | os.O_CREAT, mode)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0

    # The slow part.
    def fsync(self, path, datasync, fh):
        self._slow()
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def fsyncdir(self, path, datasync, fh):
        self._slow()
        fd = os.open(self._p(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backing")
    ap.add_argument("mountpoint")
    ap.add_argument("--fsync-ms", type=float, default=200.0)
    a = ap.parse_args()
    os.makedirs(a.backing, exist_ok=True)
    fuse.FUSE(SlowSync(a.backing, a.fsync_ms / 1000.0), a.mountpoint, foreground=True, nothreads=False)


if __name__ == "__main__":
    main()
