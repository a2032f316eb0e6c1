"""`evdiff report`: one self-contained page for a campaign, parsed here and,
where Chromium is installed, rendered headless (a screenshot that is not
blank, no console message)."""
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.console import Console

from fuzz import campaign, findings, oracle, report
from fuzz.cli import main
from fuzz.explain import MARK, SAME, explain, rows
from fuzz.text import read_scenario

ROOT = Path(__file__).resolve().parent.parent
REGRESSIONS = ROOT / "corpus" / "regressions"
CASES = ("a-lost-first-exception-svm", "rm-error-code-vmx", "pending-lost-to-intr-exit-vmx")
KNOWN_REASON = "planted by the test: listed apart, with this reason"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@pytest.fixture(scope="module")
def campaign_dir(tmp_path_factory):
    """A findings directory as a campaign leaves it: causes recorded from
    regression cases by every real implementation, stats and plot data of
    two runs (the second a resume), a torn last row (a campaign killed
    while appending), and a known list naming one of the causes."""
    root = tmp_path_factory.mktemp("campaign") / "findings"
    store = findings.FindingStore(root, minimise=False)
    for name in CASES:
        store.record(oracle.compare(read_scenario(REGRESSIONS / f"{name}.txt")))
    store.flush()
    mon = campaign.Monitor(campaign.Options(findings=root), store, "atheris", Console(file=io.StringIO()))
    st = mon.stats
    st.implementations = oracle.api.names()
    for run, steps in enumerate((30, 12)):
        for i in range(1, steps + 1):
            st.elapsed, st.execs, st.execs_per_s = i * 5.0, i * 800 * (run + 1), 150.0 + 10 * (i % 4)
            st.cov, st.ft, st.corpus, st.findings = 200 + 5 * i + 100 * run, 600 + 20 * i, 10 + i, min(i, 5)
            mon.write_stats()
    with open(root / "plot_data.csv", "a") as f:
        f.write("1700000000,61.0,99")
    found = store.findings()
    known = root.parent / "known.txt"
    known.write_text(f"{found[0].signature} ## {KNOWN_REASON}\n")
    return root, found, known


class Page(HTMLParser):
    """Every element with its ancestors, the text under each id, and tags
    left open or closed out of order."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.doctype, self.stack, self.errors = None, [], []
        self.elements: list[tuple[str, dict, tuple]] = []
        self.text: dict[str, str] = {}
        self.feed(text)
        self.close()
        self.errors += [f"<{t}> never closed" for t, _ in self.stack]

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.handle_data(" ")  # cells and lines apart
        self.handle_startendtag(tag, attrs)
        if tag not in VOID:
            self.stack.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), tuple(self.stack)))

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1][0] == tag:
            self.stack.pop()
        else:
            self.errors.append(f"</{tag}> closes {self.stack[-1][0] if self.stack else 'nothing'}")

    def handle_data(self, data):
        self.text[""] = self.text.get("", "") + data
        for _, attrs in self.stack:
            if "id" in attrs:
                self.text[attrs["id"]] = self.text.get(attrs["id"], "") + data

    def inside(self, tag: str, ancestor_id: str) -> list[dict]:
        return [a for t, a, up in self.elements if t == tag and any(u.get("id") == ancestor_id for _, u in up)]


def test_every_finding_is_on_the_page_and_nothing_is_fetched(campaign_dir, capsys):
    root, found, known = campaign_dir
    out = root.parent / "page.html"
    assert main(["report", str(root), "-o", str(out), "--known", str(known)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    page = Page(out.read_text())
    assert page.doctype.lower() == "doctype html" and not page.errors
    tags = {t for t, _, _ in page.elements}
    assert {"html", "head", "title", "style", "body", "svg", "details"} <= tags
    assert not tags & {"script", "link", "iframe", "object", "embed", "img", "base"}
    csp = [a["content"] for t, a, _ in page.elements
           if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]
    urls = [v for _, a, _ in page.elements for k, v in a.items() if k in ("src", "href", "action", "data") and v]
    assert urls and all(u.startswith("#") for u in urls)  # links within the page only
    assert not re.search(r"url\(|@import", out.read_text())

    assert len(found) >= 4 and len({f.signature for f in found}) == len(found)
    for f in found:
        where = "known" if f is found[0] else "causes"
        art = f"h-{f.path.name}"
        assert {"id": art, "class": "cause"} in page.inside("article", where)
        assert {"href": f"#{art}"} in page.inside("a", where)  # a row of the overview
        text = page.text[art]
        assert f.signature in text and (f.path / "smallest.txt").read_text() in text
        assert campaign.export_command(f) in text
        assert " ".join(f.meta["impls"]) in text.replace(", ", " ")
        assert all(f"{pair}: {v}" in text for pair, v in f.meta["verdicts"].items())
        assert f.meta["function"] in text and f.meta["first_seen"].replace("T", " ") in text
        assert "!!" in text  # its side-by-side explanation, run again, shows where it diverges
        assert (KNOWN_REASON in text) == (f is found[0])
    assert f"{len(found) - 1} root causes, besides 1 known" in " ".join(page.text[""].split())

    facts = " ".join(page.text["campaign"].split())
    assert "engine atheris" in facts and "2 runs, 0:03:30, 43,200 executions" in facts
    assert "implementations " + ", ".join(oracle.api.names()) in facts
    svgs = page.inside("svg", "campaign")
    assert len(svgs) == 3 and all("viewbox" in s for s in svgs)
    assert len(page.inside("polyline", "campaign")) == 3 * 2  # two runs a plot, the torn row left out
    assert len([a for a in page.inside("line", "campaign") if a.get("class") == "resume"]) == 3


def test_report_of_a_directory_that_is_no_findings_store(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a findings directory" in capsys.readouterr().err
    assert not (tmp_path / findings.STATE_DIR).exists()  # and leaves nothing behind


def test_a_store_without_stats_and_a_broken_scenario_still_make_a_page(tmp_path):
    """No stats.json nor plot_data.csv (a store the campaign never reached
    a status line in), and a smallest.txt edited into a bad line: the page
    says so where each would be and lists the finding all the same."""
    store = findings.FindingStore(tmp_path, minimise=False)
    (sig, *_) = store.record(oracle.compare(read_scenario(REGRESSIONS / f"{CASES[0]}.txt")))
    smallest = store.dir_for(sig) / "smallest.txt"
    smallest.write_text(smallest.read_text() + "l2.excepton #GP\n")
    page = Page(report.render(tmp_path))
    assert not page.errors
    assert "No stats.json here" in page.text["campaign"] and page.text["campaign"].count("no data") == 3
    art = page.text[f"h-{store.dir_for(sig).name}"]
    assert sig in art and f"{smallest}:" in art and "l2.excepton" in art


def test_plot_puts_the_maximum_on_top_and_the_runs_end_to_end():
    runs = [[{"elapsed_s": 10.0 * i, "execs": i, "cov": 10.0 * i} for i in range(11)],
            [{"elapsed_s": 10.0 * i, "execs": i, "cov": 100.0} for i in range(1, 6)]]
    svg = report.plot(runs, "cov", "coverage")
    first, second = (line.split() for line in re.findall(r'<polyline class="series" points="([^"]+)"', svg))
    frame = re.search(r'<rect class="frame" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', svg)
    left, top, width, height = map(float, frame.groups())
    assert first[0] == f"{left:.1f},{top + height:.1f}"  # (0, 0): bottom left
    assert first[-1].split(",")[1] == f"{top:.1f}"  # 100 of a nice 100: the top
    assert second[-1] == f"{left + width:.1f},{top:.1f}"  # the second run ends the time axis
    assert report.plot(runs, "ft", "ft").startswith('<p class="none">')


def test_explain_html_marks_each_diverging_row():
    rep = oracle.compare(read_scenario(REGRESSIONS / "a-lost-first-exception-svm.txt"))
    page = Page(explain(rep, "html"))
    assert not page.errors
    marked = [a for t, a, _ in page.elements if t == "tr" and a.get("class") == "diverges"]
    assert len(marked) == sum(r[0] == MARK for r in rows(rep)[1]) >= 1
    same = [a for t, a, _ in page.elements if t == "td" and "colspan" in a]
    assert [a["colspan"] for a in same] == [str(len(rep.results))] and any(r[2] == SAME for r in rows(rep)[1])
    assert "->" not in explain(rep, "html") and "prepatch-&gt;postpatch: fixed" in explain(rep, "html")


def test_the_page_renders_in_chromium(campaign_dir, tmp_path):
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip(f"no Chromium on PATH ({', '.join(BROWSERS)}): `apt-get install chromium` (scripts/test.sh "
                    "does where it can) to render the report headless")
    from PIL import Image, ImageStat

    root, _, known = campaign_dir
    page = report.write(root, tmp_path / "report.html", known=dict([known.read_text().strip().split(" ## ")]))
    shot = tmp_path / "report.png"
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                        f"--screenshot={shot}", "--window-size=1280,2000", page.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == 0 and shot.exists(), log[-3000:]
    console = [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)
    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2000)
    background = max(img.getcolors(1 << 16))[1]
    ink = sum(n for n, v in img.getcolors(1 << 16) if abs(v - background) > 40) / (1280 * 2000)
    assert ink > 0.02 and ImageStat.Stat(img).stddev[0] > 10, f"a blank page? {ink:.1%} dark pixels"


def test_the_page_says_what_the_inputs_never_reached(campaign_dir):
    """The `evdiff coverage` table of what was never reached: reference rules
    and each port's ported functions, counted over the findings' inputs."""
    root, found, known = campaign_dir
    facts = report.unreached(root, ["reference", "prepatch"])
    assert facts["inputs"] > 0 and 0 < len(facts["rules"]) < facts["total_rules"]
    assert 0 < len(facts["ports"]["prepatch"]) < facts["total_functions"]["prepatch"]
    page = report.render(root)
    assert 'id="coverage"' in page and "never reached" in page
    assert facts["rules"][0].text.split("…")[0][:20] in page.replace("&#39;", "'")
