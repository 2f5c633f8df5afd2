"""Rebuild corpus/*.txt from the Debian packages they came from (stdlib only).

Not needed to run the benchmark (the corpus files are committed); kept so the
provenance is reproducible.  Usage (as root on a Debian machine):

    apt-get download r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*.deb ja
    apt-get install bible-kjv            # provides /usr/bin/bible + bible-kjv-text
    python3 build_corpus.py ja/usr/lib/R/site-library/janeaustenr/data

The janeaustenr data is an R lazy-load database (Rdata.rdx / Rdata.rdb); a
minimal R-serialization reader below extracts the character vectors.
"""
import gzip
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent / "corpus"


class _RReader:
    def __init__(self, b):
        self.b, self.p, self.refs = b, 0, []

    def i(self):
        v = struct.unpack(">i", self.b[self.p:self.p + 4])[0]
        self.p += 4
        return v

    def start(self):
        assert self.b[:2] == b"X\n"
        self.p = 2
        ver = self.i()
        self.i(); self.i()
        if ver == 3:
            n = self.i()  # native-encoding name
            self.p += n
        return self.obj()

    def obj(self):
        f = self.i()
        t, has_attr, has_tag = f & 0xFF, f & (1 << 9), f & (1 << 10)
        if t == 254:
            return None
        if t == 255:  # REFSXP
            return self.refs[(f >> 8) - 1]
        if t == 1:  # SYMSXP
            sym = ("sym", self.obj())
            self.refs.append(sym)
            return sym
        if t == 9:  # CHARSXP
            n = self.i()
            if n == -1:
                return None
            s = self.b[self.p:self.p + n].decode("utf-8")
            self.p += n
            return s
        if t == 2:  # pairlist
            out = []
            while True:
                if has_attr:
                    self.obj()
                tag = self.obj() if has_tag else None
                out.append((tag, self.obj()))
                f = self.i()
                t, has_attr, has_tag = f & 0xFF, f & (1 << 9), f & (1 << 10)
                if t != 2:
                    self.p -= 4
                    self.obj()
                    return ("pairlist", out)
        if t in (16, 19):  # STRSXP, VECSXP
            v = [self.obj() for _ in range(self.i())]
            a = self.obj() if has_attr else None
            return ("vec", v, a)
        if t in (10, 13):  # LGLSXP, INTSXP
            n = self.i()
            v = list(struct.unpack(">%di" % n, self.b[self.p:self.p + 4 * n]))
            self.p += 4 * n
            a = self.obj() if has_attr else None
            return ("int", v, a)
        raise ValueError("unsupported R type %d" % t)


def austen_novels(data_dir):
    d = Path(data_dir)
    idx = _RReader(gzip.open(d / "Rdata.rdx").read()).start()
    variables = idx[1][0]
    names = variables[2][1][0][1][1]
    raw = (d / "Rdata.rdb").read_bytes()
    novels = {}
    for name, (_, (off, ln), _) in zip(names, variables[1]):
        chunk = raw[off:off + ln]
        data = zlib.decompress(chunk[4:])
        assert len(data) == struct.unpack(">I", chunk[:4])[0]
        lines = _RReader(data).start()[1]
        novels[name] = ["" if x is None else x for x in lines]
    return novels


def paragraphs(lines):
    """Join hard-wrapped lines into one paragraph per line; collapse spaces."""
    text = "\n".join(lines)
    paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return "\n".join(p for p in paras if p) + "\n"


def excerpt(lines, end_heading):
    """Lines from the start of the novel up to (not including) end_heading."""
    end = next(i for i, l in enumerate(lines) if l.strip() == end_heading)
    return lines[:end]


def main(data_dir):
    OUT.mkdir(exist_ok=True)
    nov = austen_novels(data_dir)
    spec = {
        "pride_prejudice": ("prideprejudice", "Chapter 7"),
        "persuasion": ("persuasion", "Chapter 5"),
        "northanger_abbey": ("northangerabbey", "CHAPTER 6"),
        "emma": ("emma", "CHAPTER IV"),
    }
    for short, (key, stop) in spec.items():
        (OUT / f"{short}.txt").write_text(paragraphs(excerpt(nov[key], stop)), encoding="utf-8")
    # Book of Ruth, KJV, one verse per line.
    out = subprocess.run(["bible", "-l100000", "ruth1:1-4:22"], capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, check=True).stdout
    body = []
    for line in out.splitlines():
        line = re.sub(r"\s+", " ", line).strip()
        if line:
            body.append(line)
    (OUT / "ruth.txt").write_text("The Book of Ruth (King James Version)\n" + "\n".join(body) + "\n",
                                  encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
