// Package repotest holds tests of the repository itself rather than of its
// code: the README names only make targets the Makefile has, and no tracked
// file refers to files outside the repository.
package repotest
