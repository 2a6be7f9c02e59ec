#!/usr/bin/env python3
"""Check that docs/api/ documents every public symbol of every public header.

For each header include/tlsresume/NAME.hpp there must be a page docs/api/NAME.md, and each page
must belong to a header (docs/api/README.md, the index, excepted). The public symbols of a header
are found by a small C++ scanner (not a compiler: it relies on the project's style), skipping
every namespace whose name starts with `detail` and everything private:

  - classes, structs, enums, concepts, type aliases, variables and free functions declared in
    namespace `tlsresume` or `tlsresume::testing`;
  - the public members of those classes: member functions (operators included; constructors and
    destructors are covered by the class), static and non-static data members, member type
    aliases, nested types; friend functions;
  - the enumerators of those enums;
  - macros: `#define TLSRESUME_...` and the `TLSRESUME_...` macros a header tests with
    `#if defined(...)` / `#ifdef` (macros the user defines), except `TLSRESUME_DETAIL_...`
    (internal, like namespace `detail`);
  - specialisations of other libraries' templates for our types (`fmt::formatter<...>`,
    `std::hash<...>`, `std::is_error_code_enum<...>`);
  - for the umbrella header tlsresume.hpp: each header it includes, which the page must link to
    (`NAME.md`).

A symbol is documented when its name appears as a whole word inside code on the page (an inline
`code span` or a fenced block). A member or an enumerator must appear inside the section of its
class or enum: the part of the page under a heading that names the class (as a whole word), up
to the next heading of the same or a higher level. A specialisation must appear as written in the
header, spaces and `tlsresume::` qualifications ignored.

Usage:
    check_api_reference.py [--root DIR] [--list [HEADER]]

--list prints the symbols found (of one header, e.g. `client.hpp`) instead of checking.

Exit status: 0 every symbol documented; 1 something is missing; 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

INDEX_PAGES = {"README.md", "index.md"}


@dataclasses.dataclass(frozen=True)
class Symbol:
    kind: str  # class, enum, concept, alias, variable, function, member, enumerator, macro, specialisation, include
    name: str  # what must appear on the page
    owner: str | None = None  # class or enum whose section must contain it

    def display(self) -> str:
        return f"{self.owner}::{self.name}" if self.owner else self.name


# ---- scanning C++ ---------------------------------------------------------------------------------

def strip_comments_and_literals(text: str) -> str:
    """Blanks out comments, string and character literals (raw strings too); keeps newlines."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "R" and text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'R"([^(\s]*)\(', text[i:])
            if m:
                end = text.find(")" + m.group(1) + '"', i)
                j = n if end < 0 else end + len(m.group(1)) + 2
                out.append('""' + re.sub(r"[^\n]", " ", text[i + 2:j]))
                i = j
            else:
                out.append(c)
                i += 1
        elif c in "\"'":
            if c == "'" and i > 0 and (text[i - 1].isalnum()) and text[i - 1] not in "uUL8":
                out.append(c)  # a digit separator (1'000)
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (min(j, n) - i - 1) + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


DEFINE = re.compile(r"^\s*#\s*define\s+(?P<name>[A-Za-z_]\w*)", re.MULTILINE)
TESTED_MACRO = re.compile(r"^\s*#\s*(?:if|elif|ifdef|ifndef)\b(?P<rest>.*)$", re.MULTILINE)
TOKEN = re.compile(r"""
    (?P<op>operator\s*(?:\(\s*\)|\[\s*\]|<=>|->\*?|<<=?|>>=?|[-+*/%^&|~!=<>]=?|&&|\|\||\+\+|--|,|new\b|delete\b)) |
    (?P<conv>operator\s+[A-Za-z_][\w:]*(?:\s*<[^()]*>)?[\s*&]*) |
    (?P<id>[A-Za-z_]\w*) |
    (?P<num>\d[\w'.]*) |
    (?P<punct>::|->|>=|<=|==|!=|&&|\|\||\.\.\.|[{}()\[\]<>;:,=&*~!?+\-/%^|.#])
""", re.VERBOSE)


def macros(raw: str) -> list[Symbol]:
    found: list[str] = []
    for m in DEFINE.finditer(raw):
        if m.group("name").startswith("TLSRESUME_"):
            found.append(m.group("name"))
    for m in TESTED_MACRO.finditer(raw):
        for name in re.findall(r"\bTLSRESUME_\w+", m.group("rest")):
            found.append(name)
    public = [name for name in found if not name.startswith("TLSRESUME_DETAIL_")]
    return [Symbol("macro", name) for name in dict.fromkeys(public)]


def tokens(code: str) -> list[str]:
    code = re.sub(r"^\s*#.*?(?<!\\)$", "", code, flags=re.MULTILINE | re.DOTALL)  # preprocessor lines
    code = re.sub(r"\[\[.*?\]\]", " ", code, flags=re.DOTALL)  # attributes
    out = []
    for m in TOKEN.finditer(code):
        text = m.group(0)
        if m.group("op") or m.group("conv"):
            text = "operator" + (" " if m.group("conv") else "") + re.sub(r"\s+", "", text[len("operator"):])
        out.append(text)
    return out


@dataclasses.dataclass
class Scope:
    kind: str  # namespace, class, enum, other
    name: str  # the class's or enum's name; the namespace's qualified name
    public: bool  # whether names declared here are public API
    access_public: bool = True  # current access (classes)
    continue_statement: bool = False  # an initializer's braces: the statement goes on after `}`
    is_specialisation: bool = False


def strip_template_prefix(stmt: list[str]) -> list[str]:
    """Drops leading `template <...>` groups."""
    i = 0
    while i < len(stmt) and stmt[i] == "template" and i + 1 < len(stmt) and stmt[i + 1] == "<":
        depth, j = 0, i + 1
        while j < len(stmt):
            if stmt[j] == "<":
                depth += 1
            elif stmt[j] == ">":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        i = j + 1
    return stmt[i:]


def top_level_positions(stmt: list[str]) -> tuple[int | None, int | None]:
    """Index of the first top-level `(` that opens a parameter list, and of the first top-level `=`."""
    paren = angle = 0
    first_paren = first_eq = None
    i = 0
    while i < len(stmt):
        t = stmt[i]
        if t == "(":
            if paren == 0 and angle == 0 and first_paren is None:
                prev = stmt[i - 1] if i > 0 else ""
                if prev not in ("requires", "noexcept", "decltype", "alignas", "explicit", "sizeof"):
                    first_paren = i
            paren += 1
        elif t == ")":
            paren -= 1
        elif paren == 0:
            if t == "<" and i > 0 and (re.match(r"[A-Za-z_]", stmt[i - 1]) or stmt[i - 1] == ">"):
                angle += 1
            elif t == ">" and angle > 0:
                angle -= 1
            elif t == "=" and angle == 0 and first_eq is None:
                first_eq = i
        i += 1
    return first_paren, first_eq


def is_identifier(t: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_]\w*", t)) or t.startswith("operator")


KEYWORDS = {
    "const", "constexpr", "static", "inline", "virtual", "explicit", "friend", "typename", "noexcept", "override",
    "final", "mutable", "volatile", "unsigned", "signed", "int", "long", "short", "char", "bool", "void", "auto",
    "double", "float", "requires", "template", "class", "struct", "enum", "union", "using", "typedef", "consteval",
    "constinit", "extern", "default", "delete",
}


class HeaderScanner:
    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.symbols: list[Symbol] = macros(raw)
        self.stack: list[Scope] = [Scope("namespace", "", False)]
        self.stmt: list[str] = []
        self.paren = 0  # parentheses open in the current statement
        self.inner_braces = 0  # braces opened inside parentheses (default arguments)

    # -- helpers --
    def add(self, kind: str, name: str, owner: str | None = None) -> None:
        sym = Symbol(kind, name, owner)
        if sym not in self.symbols:
            self.symbols.append(sym)

    def current(self) -> Scope:
        return self.stack[-1]

    def enclosing_class(self) -> Scope | None:
        scope = self.current()
        return scope if scope.kind == "class" else None

    def declaring_public(self) -> bool:
        scope = self.current()
        if scope.kind == "namespace":
            return scope.public
        if scope.kind == "class":
            return scope.public and scope.access_public and not scope.is_specialisation
        return False

    @staticmethod
    def namespace_public(qualified: str) -> bool:
        parts = [p for p in qualified.split("::") if p]
        return bool(parts) and parts[0] == "tlsresume" and not any(p.startswith("detail") for p in parts)

    # -- the walk --
    def scan(self) -> list[Symbol]:
        for t in tokens(strip_comments_and_literals(self.raw)):
            self.feed(t)
        return self.symbols

    def feed(self, t: str) -> None:
        scope = self.current()
        if scope.kind == "other":
            if t == "{":
                self.stack.append(Scope("other", "", False))
            elif t == "}":
                closed = self.stack.pop()
                if not closed.continue_statement and self.current().kind != "other":
                    self.stmt = []
            return
        if scope.kind == "enum":
            if t == "}":
                self.finish_enum()
                self.stack.pop()
                self.stmt = []
            else:
                self.stmt.append(t)
            return
        # namespace or class scope
        if self.paren > 0:
            self.stmt.append(t)
            if t == "(":
                self.paren += 1
            elif t == ")":
                self.paren -= 1
            return
        if t == "(":
            self.paren += 1
            self.stmt.append(t)
        elif t == ":" and scope.kind == "class" and self.stmt in (["public"], ["private"], ["protected"]):
            scope.access_public = self.stmt[0] == "public"
            self.stmt = []
        elif t == ";":
            self.declaration(self.stmt)
            self.stmt = []
        elif t == "{":
            self.open_brace(self.stmt)
        elif t == "}":
            self.stack.pop()
            self.stmt = []
        else:
            self.stmt.append(t)

    def finish_enum(self) -> None:
        scope = self.current()
        if not scope.public:
            return
        expect_name = True
        depth = 0
        for t in self.stmt:
            if t in "(<":
                depth += 1
            elif t in ")>":
                depth -= 1
            elif t == "," and depth == 0:
                expect_name = True
            elif expect_name and is_identifier(t):
                self.add("enumerator", t, scope.name)
                expect_name = False

    def open_brace(self, stmt: list[str]) -> None:
        body = strip_template_prefix(stmt)
        head = body[0] if body else ""
        public_here = self.declaring_public()
        if head == "namespace" or (head == "inline" and body[1:2] == ["namespace"]):
            names = "".join(t for t in body if t not in ("inline", "namespace"))
            parent = self.current().name
            qualified = f"{parent}::{names}" if parent else names
            self.stack.append(Scope("namespace", qualified, self.namespace_public(qualified)))
            self.stmt = []
            return
        if head in ("class", "struct", "union"):
            name_tokens: list[str] = []
            angle = 0
            for t in body[1:]:
                if angle == 0 and t in (":", "final"):
                    break
                if t == "<":
                    angle += 1
                elif t == ">":
                    angle -= 1
                name_tokens.append(t)
            name = "".join(name_tokens)
            specialisation = "::" in name or "<" in name
            if specialisation:
                if "tlsresume::" in name:
                    self.add("specialisation", name)
                short = name
            else:
                short = name
                if public_here:
                    owner = self.enclosing_class()
                    if owner is not None:
                        self.add("member", short, owner.name)
                    self.add("class", short)
            self.stack.append(Scope("class", short, public_here and not specialisation,
                                    access_public=head != "class", is_specialisation=specialisation))
            self.stmt = []
            return
        if head == "enum":
            rest = [t for t in body[1:] if t not in ("class", "struct")]
            name = rest[0] if rest and is_identifier(rest[0]) else ""
            if public_here and name:
                owner = self.enclosing_class()
                if owner is not None:
                    self.add("member", name, owner.name)
                self.add("enum", name)
            self.stack.append(Scope("enum", name, public_here and bool(name)))
            self.stmt = []
            return
        if "concept" in body:
            self.stack.append(Scope("other", "", False, continue_statement=True))
            self.stmt.append("{")  # keeps the statement non-empty; the name comes before `=`
            return
        paren, eq = top_level_positions(body)
        if paren is not None and (eq is None or paren < eq):
            self.function(body, paren, definition=True)
            self.stack.append(Scope("other", "", False))
            self.stmt = []
            return
        # An initializer in braces: `T x{...};` or `T x = {...};`. The statement ends at `;`.
        self.stack.append(Scope("other", "", False, continue_statement=True))
        self.stmt.append("{}")

    def function(self, body: list[str], paren: int, definition: bool) -> None:
        if not self.declaring_public() and not (self.current().kind == "class" and "friend" in body
                                                and self.current().public and not self.current().is_specialisation):
            return
        name = body[paren - 1] if paren > 0 else ""
        before = body[paren - 2] if paren > 1 else ""
        if not is_identifier(name) or name in KEYWORDS:
            return
        if before == "::":
            return  # an out-of-line definition of a member declared in its class
        if before == "~":
            return  # destructor
        scope = self.current()
        tail = body[paren:]
        if "=" in tail and "delete" in tail:
            return
        if scope.kind == "class":
            if name == scope.name:
                return  # constructor
            self.add("member", name, scope.name)
        else:
            self.add("function", name)

    def declaration(self, stmt: list[str]) -> None:
        body = strip_template_prefix(stmt)
        if not body:
            return
        head = body[0]
        if head in ("static_assert", "public", "private", "protected"):
            return
        if head in ("class", "struct", "union", "enum") and "(" not in body:
            return  # forward declaration
        if "friend" in body and not (body[-2:] == ["=", "default"]):
            return  # befriends a class or a function declared elsewhere (a defaulted operator stays)
        if "concept" in body:
            i = body.index("concept")
            if i + 1 < len(body) and self.declaring_public():
                self.add("concept", body[i + 1])
            return
        if head == "using":
            if len(body) > 2 and body[2] == "=" and self.declaring_public():
                self.add_declared(body[1], "alias")
            return
        if head == "typedef":
            if self.declaring_public():
                ids = [t for t in body if is_identifier(t)]
                if ids:
                    self.add_declared(ids[-1], "alias")
            return
        paren, eq = top_level_positions(body)
        if paren is not None and (eq is None or paren < eq):
            self.function(body, paren, definition=False)
            return
        if not self.declaring_public():
            return
        end = len(body)
        for stop in ("=", "{}", "["):
            if stop in body:
                end = min(end, body.index(stop))
        ids = [t for t in body[:end] if is_identifier(t) and t not in KEYWORDS]
        if ids:
            self.add_declared(ids[-1], "variable")

    def add_declared(self, name: str, kind: str) -> None:
        owner = self.enclosing_class()
        if owner is not None:
            self.add("member", name, owner.name)
        else:
            self.add(kind, name)


def umbrella_includes(raw: str) -> list[Symbol]:
    return [Symbol("include", Path(h).stem + ".md")
            for h in re.findall(r'^\s*#\s*include\s*[<"]tlsresume/([\w.]+\.hpp)[>"]', raw, re.MULTILINE)]


def header_symbols(header: Path) -> list[Symbol]:
    raw = header.read_text(encoding="utf-8")
    symbols = HeaderScanner(raw).scan()
    if header.name == "tlsresume.hpp":
        symbols += umbrella_includes(raw)
    return symbols


# ---- reading a page -------------------------------------------------------------------------------

@dataclasses.dataclass
class Page:
    lines: list[str]  # the code text of each line (inline code spans, fenced lines)
    raw: list[str]
    headings: list[tuple[int, int, str]]  # (line index, level, text)

    @staticmethod
    def read(path: Path) -> "Page":
        raw = path.read_text(encoding="utf-8").splitlines()
        code: list[str] = []
        headings: list[tuple[int, int, str]] = []
        fence: str | None = None
        for i, line in enumerate(raw):
            stripped = line.strip()
            m = re.match(r"(`{3,}|~{3,})", stripped)
            if fence is None and m:
                fence = m.group(1)
                code.append("")
                continue
            if fence is not None:
                if stripped.startswith(fence[0] * len(fence)) and stripped.strip(fence[0]) == "":
                    fence = None
                    code.append("")
                else:
                    code.append(line)
                continue
            h = re.match(r"(#{1,6})\s+(.*)", line)
            if h:
                headings.append((i, len(h.group(1)), h.group(2)))
            code.append(" ".join(span for _, span in re.findall(r"(`+)(.+?)\1", line)))
        return Page(code, raw, headings)

    def section_lines(self, owner: str) -> list[int] | None:
        """Lines of every section whose heading names `owner`, or None if no heading does."""
        word = re.compile(r"(?<![\w:])" + re.escape(owner) + r"(?!\w)")
        found: list[int] = []
        hit = False
        for k, (line, level, text) in enumerate(self.headings):
            if not word.search(text):
                continue
            hit = True
            end = len(self.lines)
            for line2, level2, _ in self.headings[k + 1:]:
                if level2 <= level:
                    end = line2
                    break
            found.extend(range(line, end))
        return found if hit else None

    def has(self, name: str, lines: list[int] | None = None) -> bool:
        pattern = re.compile(r"(?<![\w~])" + re.escape(name) + r"(?!\w)")
        rows = range(len(self.lines)) if lines is None else lines
        return any(pattern.search(self.lines[i]) for i in rows)

    def has_specialisation(self, name: str) -> bool:
        def norm(s: str) -> str:
            return re.sub(r"\s+", "", s).replace("tlsresume::", "")
        wanted = norm(name)
        return any(wanted in norm(line) for line in self.lines)

    def links_to(self, target: str) -> bool:
        return any(re.search(r"\]\((\./)?" + re.escape(target) + r"(#[^)]*)?\)", line) for line in self.raw)


def check_page(page: Page, symbols: list[Symbol]) -> list[str]:
    missing: list[str] = []
    sections: dict[str, list[int] | None] = {}
    for s in symbols:
        if s.kind == "include":
            if not page.links_to(s.name):
                missing.append(f"no link to {s.name}")
            continue
        if s.kind == "specialisation":
            if not page.has_specialisation(s.name):
                missing.append(f"specialisation `{s.name}`")
            continue
        if s.owner is None:
            if not page.has(s.name):
                missing.append(f"{s.kind} `{s.name}`")
            continue
        if s.owner not in sections:
            sections[s.owner] = page.section_lines(s.owner)
        lines = sections[s.owner]
        if lines is None:
            missing.append(f"no heading names `{s.owner}` (for its member `{s.name}`)")
            continue
        if not page.has(s.name, lines):
            missing.append(f"{s.kind} `{s.display()}` (not in code in the section of `{s.owner}`)")
    return list(dict.fromkeys(missing))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="check_api_reference.py",
                                     description="Check that docs/api/ documents every public symbol.")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--list", nargs="?", const="*", metavar="HEADER", help="print the symbols found")
    args = parser.parse_args(argv)
    include = args.root / "include" / "tlsresume"
    api = args.root / "docs" / "api"
    headers = sorted(include.glob("*.hpp"))
    if not headers:
        print(f"api: no headers in {include}")
        return 1

    if args.list:
        for h in headers:
            if args.list not in ("*", h.name):
                continue
            for s in header_symbols(h):
                print(f"{h.name}: {s.kind:14} {s.display()}")
        return 0

    problems = 0
    total = 0
    for h in headers:
        page_path = api / (h.stem + ".md")
        symbols = header_symbols(h)
        total += len(symbols)
        if not page_path.is_file():
            print(f"FAIL {h.name}: no page docs/api/{page_path.name} ({len(symbols)} public symbols)")
            problems += 1
            continue
        missing = check_page(Page.read(page_path), symbols)
        if missing:
            problems += 1
            print(f"FAIL docs/api/{page_path.name}: {len(missing)} of {len(symbols)} symbols of {h.name} not documented:")
            for m in missing:
                print(f"       {m}")
        else:
            print(f"ok   docs/api/{page_path.name}: {len(symbols)} symbols of {h.name}")
    if api.is_dir():
        for page in sorted(api.glob("*.md")):
            if page.name not in INDEX_PAGES and not (include / (page.stem + ".hpp")).is_file():
                print(f"FAIL docs/api/{page.name}: no header include/tlsresume/{page.stem}.hpp (a stale page?)")
                problems += 1
    print(f"api: {len(headers)} headers, {total} public symbols, {problems} pages with problems")
    return 0 if problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
