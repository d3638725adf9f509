package repotest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

// Every make target README.md names is one the Makefile has.
func TestReadmeNamesOnlyMakeTargetsThatExist(t *testing.T) {
	root := moduleRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets := makeTargets(string(makefile))
	mentions := makeMentions(string(readme))
	if len(mentions) == 0 {
		t.Fatal("README.md names no make target at all: the parser is broken, or the README lost its commands")
	}
	var missing []string
	for _, m := range mentions {
		if !targets[m.target] {
			missing = append(missing, fmt.Sprintf("README.md:%d: make %s", m.line, m.target))
		}
	}
	if len(missing) > 0 {
		t.Errorf("README.md names make targets the Makefile does not have:\n\t%s\nthe Makefile's targets: %s",
			strings.Join(missing, "\n\t"), strings.Join(sortedKeys(targets), ", "))
	}
}

// No tracked file refers to files outside the repository (a sibling
// folder of the clone), except CI's, which runs where that is known.
func TestNoReferenceOutsideTheRepository(t *testing.T) {
	root := moduleRoot(t)
	needle := []byte(".." + "/shared") // spelled in two so that this file does not contain it
	files, how := repoFiles(t, root)
	var found []string
	for _, f := range files {
		if strings.HasPrefix(f, ".ci/") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if errors.Is(err, fs.ErrNotExist) {
			continue // tracked but deleted in the work tree
		}
		if err != nil {
			t.Error(err)
			continue
		}
		for i, line := range bytes.Split(b, []byte("\n")) {
			if bytes.Contains(line, needle) {
				found = append(found, fmt.Sprintf("%s:%d: %s", f, i+1, bytes.TrimSpace(line)))
			}
		}
	}
	if len(files) == 0 {
		t.Fatalf("no files to check (%s)", how)
	}
	if len(found) > 0 {
		t.Errorf("%d line(s) refer to %s, outside the repository (files from %s):\n\t%s",
			len(found), needle, how, strings.Join(found, "\n\t"))
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// repoFiles lists the files git tracks, slash-separated and relative to
// root, or, without git or a repository, every file under root but .git and
// the folders the root .gitignore names (/bin/ and the like). how says which.
func repoFiles(t *testing.T, root string) (files []string, how string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err == nil {
		out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
		if err == nil {
			for _, f := range strings.Split(string(out), "\x00") {
				if f != "" {
					files = append(files, f)
				}
			}
			return files, "git ls-files"
		}
		t.Logf("git ls-files: %v; walking the tree instead", err)
	}
	skip := map[string]bool{".git": true}
	if ignore, err := os.ReadFile(filepath.Join(root, ".gitignore")); err == nil {
		for _, l := range strings.Split(string(ignore), "\n") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, "/") && strings.HasSuffix(l, "/") && len(l) > 2 {
				skip[strings.Trim(l, "/")] = true
			}
		}
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir() && (d.Name() == ".git" || skip[rel]):
			return filepath.SkipDir
		case d.Type().IsRegular():
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files, "a walk of the tree"
}

// mention is a make target named in Markdown, with its line.
type mention struct {
	target string
	line   int
}

// makeMentions returns the make targets a Markdown text names: in fenced
// code blocks (every target of a command such as `make lint test` or
// `KAFKA_BROKERS=... make run`; a shell comment there counts as prose), in
// code spans (the same), and in prose, where only the word after "make"
// counts, and not when it is an English word ("make sure").
func makeMentions(md string) []mention {
	var out []mention
	var text strings.Builder // the prose since the last code block, spans included
	textLine := 1            // the line text starts on
	flush := func() {
		out = append(out, textMentions(text.String(), textLine)...)
		text.Reset()
	}
	fence := ""
	for i, line := range strings.SplitAfter(md, "\n") {
		n := i + 1
		trimmed := strings.TrimLeft(line, " ")
		if fence == "" {
			if f := fenceOf(trimmed); f != "" {
				flush()
				fence = f
				continue
			}
			if text.Len() == 0 {
				textLine = n
			}
			text.WriteString(line)
			continue
		}
		if strings.HasPrefix(trimmed, fence) && strings.TrimSpace(strings.TrimLeft(trimmed, fence[:1])) == "" {
			fence = ""
			continue
		}
		code, comment := splitComment(line)
		lineOf := func(int) int { return n }
		out = append(out, scanMake(code, true, lineOf)...)
		out = append(out, scanMake(comment, false, lineOf)...)
	}
	flush()
	return out
}

// fenceOf returns the fence a line opens a code block with, or "".
func fenceOf(line string) string {
	for _, c := range []string{"`", "~"} {
		if strings.HasPrefix(line, c+c+c) {
			return strings.Repeat(c, len(line)-len(strings.TrimLeft(line, c)))
		}
	}
	return ""
}

// splitComment splits a shell line at its comment, if any.
func splitComment(line string) (code, comment string) {
	var quote byte
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return line[:i], line[i+1:]
		}
	}
	return line, ""
}

// textMentions scans Markdown text outside code blocks: code spans as
// commands, the rest as prose.
func textMentions(text string, firstLine int) []mention {
	lineOf := func(base int) func(int) int {
		return func(off int) int { return firstLine + strings.Count(text[:base+off], "\n") }
	}
	var out []mention
	prose := 0 // where the current prose began
	for i := 0; i < len(text); {
		if text[i] != '`' {
			i++
			continue
		}
		run := len(text[i:]) - len(strings.TrimLeft(text[i:], "`"))
		tick := strings.Repeat("`", run)
		// The span ends at the next run of exactly as many backticks.
		end, from := -1, i+run
		for from < len(text) {
			j := strings.Index(text[from:], tick)
			if j < 0 {
				break
			}
			j += from
			if j+run < len(text) && text[j+run] == '`' {
				from = j + run + len(text[j+run:]) - len(strings.TrimLeft(text[j+run:], "`"))
				continue
			}
			end = j
			break
		}
		if end < 0 { // backticks without a match are text
			i += run
			continue
		}
		out = append(out, scanMake(text[prose:i], false, lineOf(prose))...)
		out = append(out, scanMake(text[i+run:end], true, lineOf(i+run))...)
		i = end + run
		prose = i
	}
	return append(out, scanMake(text[prose:], false, lineOf(prose))...)
}

var targetName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// makeFlagsWithArgument are make's options whose argument may be the next
// word.
var makeFlagsWithArgument = map[string]bool{"-C": true, "-f": true, "-I": true, "-o": true, "-W": true, "-j": false,
	"--directory": true, "--file": true, "--makefile": true, "--include-dir": true, "--old-file": true, "--what-if": true}

// english are words that follow "make" in prose when it is the verb.
var english = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`a an the this that these those it its it's them they their there one ones
		sure use sense room progress change changes every each all any no our your us you me him her up way do
		certain clear possible more less for of to in on with and or but so is good things something anything
		everything nothing both new own such some many most much few several what which whose how when where why
		if as at by from into out`) {
		english[w] = true
	}
}

// scanMake returns the targets of the make commands in s. In code (a code
// span, a command line) every target of a command counts; in prose only
// the word after "make", unless it is English. lineOf gives the line of an
// offset in s.
func scanMake(s string, code bool, lineOf func(int) int) []mention {
	var out []mention
	for at := 0; ; {
		i := strings.Index(s[at:], "make")
		if i < 0 {
			return out
		}
		i += at
		at = i + len("make")
		if i > 0 && wordish(s[i-1]) || at >= len(s) || !isSpace(s[at]) {
			continue
		}
		for rest := s[at:]; ; {
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				break
			}
			word := fields[0]
			rest = rest[strings.Index(rest, word)+len(word):]
			last := false
			if k := strings.IndexAny(word, "'’"); k >= 0 { // make run's stack
				word, last = word[:k], true
			}
			if trimmed := strings.TrimRight(word, ".,;:!?)\"`"); trimmed != word {
				word, last = trimmed, true
			}
			switch {
			case word == "":
			case strings.HasPrefix(word, "-"):
				if makeFlagsWithArgument[word] && len(strings.Fields(rest)) > 0 {
					next := strings.Fields(rest)[0]
					rest = rest[strings.Index(rest, next)+len(next):]
				}
				if !last {
					continue
				}
			case strings.Contains(word, "="): // make GO=go1.26 build
				if !last {
					continue
				}
			case targetName.MatchString(word) && (code || !english[word]):
				out = append(out, mention{target: word, line: lineOf(at)})
				if code && !last {
					continue
				}
			}
			break
		}
	}
}

func wordish(c byte) bool {
	return c == '_' || c == '.' || c == '/' || c == '-' || c == '\\' ||
		'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// makeTargets returns the targets a Makefile defines: the names before the
// colon of its rules (not special targets like .PHONY, nor patterns) and
// those listed as .PHONY.
func makeTargets(makefile string) map[string]bool {
	targets := map[string]bool{}
	makefile = strings.ReplaceAll(makefile, "\\\n", " ")
	for _, line := range strings.Split(makefile, "\n") {
		if line == "" || line[0] == '\t' || line[0] == '#' {
			continue // empty, a recipe, a comment
		}
		lhs, rhs, ok := strings.Cut(line, ":")
		if !ok || strings.Contains(lhs, "=") || strings.HasPrefix(rhs, "=") ||
			strings.HasPrefix(rhs, ":=") || strings.HasPrefix(rhs, "::=") {
			continue // not a rule: an assignment (URL ?= postgres://..., X := y)
		}
		if rhs, _, _ = strings.Cut(rhs, "#"); strings.TrimSpace(lhs) == ".PHONY" {
			for _, name := range strings.Fields(rhs) {
				targets[name] = true
			}
			continue
		}
		for _, name := range strings.Fields(lhs) {
			if !strings.HasPrefix(name, ".") && !strings.ContainsAny(name, "%$") {
				targets[name] = true
			}
		}
	}
	return targets
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestMakeMentions(t *testing.T) {
	md := "# Title\n" + // 1
		"Run `make test` first, then make bench-saga.\n" + // 2
		"Make sure to make sure; to make the demo work, make\n" + // 3
		"watch helps. `make run`'s stack; cmake build, remake x, bin/make y, `make`.\n" + // 4
		"```sh\n" + // 5
		"make run    # dev broker; then make demo\n" + // 6
		"KAFKA_BROKERS=127.0.0.1:9092 make run\n" + // 7
		"make lint test && bin/demo\n" + // 8
		"make -j2 -C . GO=go1.26 build\n" + // 9
		"echo 'make it' # make it so\n" + // 10
		"```\n" + // 11
		"CI runs ``make lint `x` `` and `make nope`.\n" // 12
	want := []mention{{"test", 2}, {"bench-saga", 2}, {"watch", 3}, {"run", 4},
		{"run", 6}, {"demo", 6}, {"run", 7}, {"lint", 8}, {"test", 8}, {"build", 9}, {"it", 10},
		{"lint", 12}, {"nope", 12}}
	if got := makeMentions(md); !slices.Equal(got, want) {
		t.Errorf("makeMentions:\n got %v\nwant %v", got, want)
	}
}

func TestMakeTargets(t *testing.T) {
	mk := ".PHONY: a b phony-only # comment\n" +
		"URL ?= postgres://x:y@h:1/db\n" +
		"X := 1\n" +
		"## a: documented\n" +
		"a: b\n" +
		"\tcommand: not a target\n" +
		"b:\n" +
		"c d: ; echo\n" +
		"long \\\n  continued: a\n" +
		"%.o: %.c\n" +
		".DEFAULT_GOAL := a\n"
	got := sortedKeys(makeTargets(mk))
	if want := []string{"a", "b", "c", "continued", "d", "long", "phony-only"}; !slices.Equal(got, want) {
		t.Errorf("makeTargets = %v; want %v", got, want)
	}
}
