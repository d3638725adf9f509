// Package contracttest checks traffic against the API documents in docs/:
// HTTP requests and responses against docs/openapi.yaml (OpenAPI 3.1, with
// kin-openapi), and Kafka records against docs/asyncapi.yaml and the JSON
// Schemas it references in docs/schemas (with santhosh-tekuri/jsonschema).
//
// It is for tests: the end-to-end tests install OpenAPI.Transport in their
// HTTP client and validate every record of the topics with
// Events.ValidateRecord, so that neither document can drift from the code.
package contracttest

import (
	"fmt"
	"path/filepath"

	"github.com/eventsaga/eventsaga/internal/testenv"
)

// DocsDir returns the docs directory of the module: docs/ beside the go.mod
// found by walking up from the working directory (a test's working
// directory is its package's).
func DocsDir() (string, error) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		return "", fmt.Errorf("contracttest: %w", err)
	}
	return filepath.Join(root, "docs"), nil
}

// Load loads docs/openapi.yaml and docs/asyncapi.yaml of the module.
func Load() (*OpenAPI, *Events, error) {
	docs, err := DocsDir()
	if err != nil {
		return nil, nil, err
	}
	api, err := LoadOpenAPI(filepath.Join(docs, "openapi.yaml"))
	if err != nil {
		return nil, nil, err
	}
	evs, err := LoadAsyncAPI(filepath.Join(docs, "asyncapi.yaml"))
	if err != nil {
		return nil, nil, err
	}
	return api, evs, nil
}

func pathError(path string, err error) error { return fmt.Errorf("%s: %w", shortPath(path), err) }

// shortPath names a document by its directory and file, docs/openapi.yaml.
func shortPath(path string) string {
	return filepath.Join(filepath.Base(filepath.Dir(path)), filepath.Base(path))
}
