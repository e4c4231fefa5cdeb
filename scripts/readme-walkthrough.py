#!/usr/bin/env python3
"""Runs README.md's walkthrough against running services, as a newcomer would, and checks that
every output the README shows is what the services answer.

    PIPELINE_API_KEY=<key with every scope, named dev> python3 scripts/readme-walkthrough.py \\
        --gateway HOST:PORT --processor HOST:PORT --notifier HOST:PORT [--readme README.md] \\
        [--namespace NAME]   # the services' PIPELINE_NAMESPACE, when not the default `pipeline`

What runs: the section from `## Walkthrough` to the next `## ` heading. In each ```sh block a
command is a line not starting with `#` with its continuations (a trailing `\\`, an open quote);
the `# ` lines after it, up to the next command, are its expected output, and so is a trailing
`# {...}` on a command line (other trailing comments are the shell's). `./fault-test.sh` and
`./bench.sh` are skipped. Each command runs with `bash -c` in the repository root after these
substitutions: localhost:8080/8082/8083 -> the addresses given; `/images/pipeline/` ->
`/images/NAMESPACE/`; the receiver's port 9000 -> a free port; the README's example `secret` and
`image_id` -> the ones answered; `msg_...` -> a webhook-id the receiver printed (of the
`event_type` shown). The receiver (`... &`) runs in the background until the end, its output
captured; each line of the README's (non-sh) block of its output must match some line it printed.

Matching:
- Header lines (`HTTP/1.1 202 Accepted`, `location: ...`) must be among the response's headers
  (names case-insensitive). A trailing `(401)` is the HTTP status (curl's `-w` prints it). The
  other lines, joined without line breaks and indentation, are the body.
- A JSON body is parsed, abbreviations and all, and compared value by value, ignoring key order
  (the services print some objects in field order, some alphabetically): each key shown must be
  there with the same value; a `...` among an object's keys allows keys not shown, and without
  one the keys must be exactly those shown (a field added to a response shown whole is a
  mismatch); a `...` value, or `[...]`, matches anything; arrays have the items shown, in order.
- Strings (and header values, and a non-JSON body) match as regexes built from the README's
  text: literal, except that `...` matches anything (including nothing) and values that differ
  on every run match any value of their shape: RFC 3339 timestamps, UUIDs, abbreviated ids
  (`ff673750-...`, `019af3...`), `whsec_` secrets, `msg_` + 32 hex. `request_id`,
  `latency_seconds` and JPEG/WebP variants' byte counts (encoder-dependent; the original's is
  exact) match any value of their type.
- A read (curl without `-X POST/PUT/PATCH/DELETE`, `-d` or `--data...`) that does not match yet
  is retried every 0.5 s for up to 30 s, as the pipeline applies events asynchronously (a
  newcomer would run it again). Writes run once. Every command must exit 0.

Prints a line per step; exits 0 when all matched, else prints each mismatch (command, what
differs, expected, actual) and exits 1.
"""

import argparse, json, os, re, shlex, signal, socket, subprocess, sys, tempfile, time  # noqa: E401
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = ("./fault-test.sh", "./bench.sh")
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)"
SHAPES = [TIME, UUID, r"whsec_[A-Za-z0-9+/=]+", r"msg_[0-9a-f]{32}"]  # each matches its shape
WILDCARDS = [(r"[0-9a-f][0-9a-f-]{3,}\.\.\.", r"[0-9a-f-]+"), (r"\.\.\.", r".*?")] + [(s, s) for s in SHAPES]
TOKENS = re.compile("|".join(f"({pattern})" for pattern, _ in WILDCARDS))
VOLATILE = {"request_id", "latency_seconds"}  # any value of the shown value's type
MORE, ANY = "...more", "...any"  # what a `...` among keys, and a `...` value, become
HEADER = re.compile(r"HTTP/[\d.]+ \d{3}\b.*|[A-Za-z][A-Za-z0-9-]*: .*")
WRITE = re.compile(r"\s(-X\s*(POST|PUT|PATCH|DELETE)|-d|--data\S*)\s")


def to_regex(text):
    """A regex for an expected text: literal but for the wildcards above."""
    out, pos = [], 0
    for m in TOKENS.finditer(text):
        out += [re.escape(text[pos:m.start()]), WILDCARDS[m.lastindex - 1][1]]
        pos = m.end()
    return "".join(out) + re.escape(text[pos:])


def complete(command):
    try:
        return not command.endswith("\\") and shlex.split(command, comments=True) is not None
    except ValueError:
        return False


def walkthrough(readme):
    """The steps, in order: ("sh", command, expected lines) or ("receiver", None, lines)."""
    section = re.search(r"^## Walkthrough\n(.*?)(?=^## |\Z)", readme.read_text(), re.M | re.S)
    steps = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", section[1], re.M | re.S):
        lines, block = body.splitlines(), []
        if lang != "sh" and "webhook-id:" in body:
            steps.append(("receiver", None, [l.strip() for l in lines if l.strip()]))
        while lang == "sh" and lines:
            line = lines.pop(0)
            if line.startswith("#") and block:
                block[-1][2].append(line[2:] if line.startswith("# ") else line[1:])
            elif line.strip() and not line.startswith("#"):
                while not complete(line) and lines:
                    line += "\n" + lines.pop(0)
                inline = re.search(r"\s#\s+([{\[].*)$", line)
                block.append(("sh", line, [inline[1]] if inline else []))
        steps += block
    return steps


def readme_json(text):
    """The README's abbreviated JSON, parsed: a `...` among an object's keys becomes the key
    MORE, any other bare `...` (a value, an array's items) the value ANY."""
    def replace(m):
        before, after = text[:m.start()].rstrip()[-1:], text[m.end():].lstrip()[:1]
        if m[0] != "...":
            return m[0]
        return f'"{MORE}":null' if before and before in "{," and after in "}," else f'"{ANY}"'
    return json.loads(re.sub(r'"(?:\\.|[^"\\])*"|\.\.\.', replace, text))


def json_diff(exp, act, path="$", siblings=None):
    """None when `act` has what `exp` (from readme_json) shows, else where it first differs."""
    key = path.rsplit(".", 1)[-1]
    if exp in (ANY, [ANY]):
        return None
    if isinstance(exp, dict) and isinstance(act, dict):
        for k, v in exp.items():
            why = k != MORE and (f"{path}: no key {k!r}" if k not in act else json_diff(v, act[k], f"{path}.{k}", exp))
            if why:
                return why
        extra = sorted(set(act) - set(exp))
        return f"{path}: keys the README does not show (nor `...`): {', '.join(extra)}" if extra and MORE not in exp else None
    if isinstance(exp, list) and isinstance(act, list) and len(exp) == len(act):
        return next(filter(None, (json_diff(e, a, f"{path}[{i}]") for i, (e, a) in enumerate(zip(exp, act)))), None)
    same_type = type(exp) is type(act) or {type(exp), type(act)} <= {int, float}
    encoded = key == "bytes" and (siblings or {}).get("content_type") in ("image/jpeg", "image/webp")
    if same_type and (key in VOLATILE or encoded or exp == act
                      or isinstance(exp, str) and re.fullmatch(to_regex(exp), act, re.S)):
        return None
    show = lambda v: json.dumps(v).replace(f'"{MORE}": null', "...").replace(f'"{ANY}"', "...")  # noqa: E731
    return f"{path}: expected {show(exp)}, got {show(act)}"


def body_diff(expected, actual):
    """None when a body matches the README's (JSON as above, other text as a regex)."""
    if expected[:1] not in ("{", "["):
        return None if re.fullmatch(to_regex(expected), actual, re.S) else "the body differs"
    try:
        exp = readme_json(expected)
    except ValueError as e:
        return f"the README's output is not JSON, even with `...` as wildcards ({e})"
    try:
        return json_diff(exp, json.loads(actual))
    except ValueError:
        return "the body is not JSON"


def mismatch(expected, out):
    """None when curl's output matches the expected lines, else what differs."""
    heads, out = [], out.replace("\r\n", "\n")
    while re.match(r"HTTP/\S+ \d{3}", out):  # `curl -i`: header blocks (100 Continue, then the answer)
        head, _, out = out.partition("\n\n")
        heads += head.splitlines()
    lower = lambda line: re.sub(r"^[\w-]+(?=: )", lambda m: m[0].lower(), line)  # noqa: E731
    for head in filter(HEADER.fullmatch, expected):
        if not any(re.fullmatch(to_regex(lower(head)), lower(h)) for h in heads):
            return f"no header line {head!r}"
    body = "".join(l.strip() for l in expected if not HEADER.fullmatch(l))
    return body_diff(body, out.strip()) if body else None


def eventually(attempt, patience):
    """attempt() -> (mismatch or None, output), tried every 0.5 s for up to `patience` seconds."""
    t0 = time.monotonic()
    while True:
        why, out = attempt()
        if why is None or time.monotonic() - t0 >= patience:
            return why, out
        time.sleep(0.5)


class Walk:
    def __init__(self, args):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.subs = {"localhost:8080": args.gateway, "localhost:8082": args.processor,
                     "localhost:8083": args.notifier, "/images/pipeline/": f"/images/{args.namespace}/",
                     "127.0.0.1:9000": f"127.0.0.1:{port}", "webhook-receiver.py 9000": f"webhook-receiver.py {port}"}
        self.receiver, self.log = None, Path(tempfile.NamedTemporaryFile(prefix="walkthrough-", delete=False).name)

    def substitute(self, text):
        for old, new in self.subs.items():
            text = text.replace(old, new)
        return text

    def step(self, kind, command, expected):
        """(mismatch or None, output) of one step."""
        expected = [self.substitute(l) for l in expected]
        if kind == "receiver":
            def printed():
                lines = [l.strip() for l in self.log.read_text().splitlines()]
                missing = [e for e in expected if all(body_diff(e, l) for l in lines)]
                return (f"no receiver line like {missing[0]!r}" if missing else None), self.log.read_text()
            return eventually(printed, 30)
        if background := re.fullmatch(r"(.*?)\s*&\s*(#[^'\"]*)?", command, re.S):
            self.receiver = subprocess.Popen(["bash", "-c", "exec " + self.substitute(background[1])], cwd=ROOT,
                                             stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
            listening = lambda: "Listening" in self.log.read_text() and self.receiver.poll() is None  # noqa: E731
            return eventually(lambda: (None if listening() else "the receiver is not listening", self.log.read_text()), 10)
        status = None
        if expected and (annotated := re.fullmatch(r"(.*?)\s*\((\d{3})\)", expected[-1])):
            expected[-1], status = annotated[1], annotated[2]
            command = command.replace("curl ", "curl -w '\\n%{http_code}' ", 1)
        read = command.lstrip().startswith("curl") and not WRITE.search(command + " ")
        why, out = eventually(lambda: self.attempt(command, expected, status), 30 if read else 0)
        for key in ("image_id", "secret"):  # the README's example values -> the ones answered
            example, got = re.search(f'"{key}":"([^".]+)"', "".join(expected)), re.search(f'"{key}":"([^"]+)"', out)
            if example and got:
                self.subs[example[1]] = got[1]
        return why, out

    def attempt(self, command, expected, status):
        command = self.substitute(command)
        if "msg_..." in command:  # a webhook-id the receiver printed, of the event type shown
            wanted = re.search(r'"event_type":"([^"]+)"', "".join(expected))
            printed = re.findall(r'^webhook-id: (\S+).*\n\s+\{"type":"([^"]+)"', self.log.read_text(), re.M)
            ids = [i for i, t in printed if not wanted or t == wanted[1]]
            command = command.replace("msg_...", ids[0] if ids else "msg_...")
        try:
            p = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return "timed out after 60 s", ""
        if p.returncode:
            return f"exit status {p.returncode}", p.stdout + p.stderr
        body, _, got = p.stdout.rpartition("\n") if status else (p.stdout, "", None)
        if got != status:
            return f"HTTP status {got}, the README shows ({status})", p.stdout
        return (mismatch(expected, body) if expected else None), p.stdout

    def stop(self):
        if self.receiver and self.receiver.poll() is None:
            os.killpg(self.receiver.pid, signal.SIGTERM)
            self.receiver.wait()
        self.log.unlink(missing_ok=True)


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for service in ("gateway", "processor", "notifier"):
        args.add_argument(f"--{service}", required=True, metavar="HOST:PORT")
    args.add_argument("--readme", default=ROOT / "README.md", type=Path)
    args.add_argument("--namespace", default="pipeline", help="the services' PIPELINE_NAMESPACE")
    args = args.parse_args()
    if not os.environ.get("PIPELINE_API_KEY"):
        sys.exit("PIPELINE_API_KEY must hold a key with every scope")
    walk, failures, ran, started = Walk(args), [], 0, time.monotonic()
    try:
        for kind, command, expected in walkthrough(args.readme):
            shown = re.sub(r"\s+", " ", command or "(the receiver's output)")
            if command and command.startswith(SKIP):
                print(f"skip        {shown}")
                continue
            ran, t0 = ran + 1, time.monotonic()
            why, out = walk.step(kind, command, expected)
            print(f"{'ok  ' if why is None else 'FAIL'} {time.monotonic() - t0:5.1f}s {shown[:100]}", flush=True)
            if why:
                failures.append((shown, expected, out, why))
    finally:
        walk.stop()
    for shown, expected, out, why in failures:
        print(f"\n--- MISMATCH: {shown}\n{why}\nexpected (README):\n  " + "\n  ".join(expected)
              + "\nactual:\n  " + "\n  ".join(out.rstrip().splitlines()))
    print(f"\n{ran} steps run, {len(failures)} mismatched, {time.monotonic() - started:.0f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
