// Package procs finds the processes another one started, from /proc (Linux):
// the chaos check picks service instances to kill among devstack's
// children, and a test checks that none outlives devstack.
package procs

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Proc is a process.
type Proc struct {
	Pid   int
	Comm  string // its command name
	State string // R, S, Z (a zombie: exited, not yet reaped), …
	Addr  string // HTTP_ADDR in its environment, if any (a service's)
}

// Name is the command name, and the address for a service.
func (p Proc) Name() string {
	if p.Addr == "" {
		return p.Comm
	}
	return p.Comm + "@" + p.Addr
}

// Children are the processes whose parent is pid.
func Children(pid int) []Proc {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []Proc
	for _, dir := range dirs {
		p, ppid, ok := read(dir)
		if ok && ppid == pid {
			out = append(out, p)
		}
	}
	return out
}

// Get is the process pid; false once it is gone.
func Get(pid int) (Proc, bool) {
	p, _, ok := read(filepath.Join("/proc", strconv.Itoa(pid)))
	return p, ok
}

func read(dir string) (Proc, int, bool) {
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return Proc{}, 0, false
	}
	// pid (comm) state ppid …: comm may hold spaces and parentheses, so
	// the fields are split after its last ')'.
	s := string(stat)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return Proc{}, 0, false
	}
	fields := strings.Fields(s[close+1:])
	if len(fields) < 2 {
		return Proc{}, 0, false
	}
	p := Proc{Comm: s[open+1 : close], State: fields[0]}
	p.Pid, _ = strconv.Atoi(filepath.Base(dir))
	ppid, _ := strconv.Atoi(fields[1])
	if env, err := os.ReadFile(filepath.Join(dir, "environ")); err == nil {
		for _, kv := range strings.Split(string(env), "\x00") {
			if v, ok := strings.CutPrefix(kv, "HTTP_ADDR="); ok {
				p.Addr = v
			}
		}
	}
	return p, ppid, true
}
