package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kubeopencode/share/pkg/cli"
)

// krewPlugin is the part of krew's Plugin (v1alpha2) that krew requires.
// Strict decoding refuses fields krew does not know.
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			Sha256 string `json:"sha256"`
			Bin    string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

// TestKrewManifest checks plugins/agent.yaml as krew would, and that it
// installs the binary this package builds under the name kubectl runs for
// `kubectl agent`.
func TestKrewManifest(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "plugins", "agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p krewPlugin
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		t.Fatalf("plugins/agent.yaml: %v", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// go build -o bin/ names the binary after this directory.
	binary := filepath.Base(wd)
	if binary != cli.PluginName {
		t.Fatalf("the package builds %q, but the CLI calls its plugin %q", binary, cli.PluginName)
	}
	checks := []struct {
		what string
		ok   bool
	}{
		{"apiVersion is krew.googlecontainertools.github.com/v1alpha2", p.APIVersion == "krew.googlecontainertools.github.com/v1alpha2"},
		{"kind is Plugin", p.Kind == "Plugin"},
		{"metadata.name is the plugin name without kubectl-", "kubectl-"+p.Metadata.Name == binary},
		{"spec.version is a v-prefixed semantic version", regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(p.Spec.Version)},
		{"spec.shortDescription is set and short", p.Spec.ShortDescription != "" && len(p.Spec.ShortDescription) <= 50},
		{"spec.description is set", p.Spec.Description != ""},
		{"spec.platforms is set", len(p.Spec.Platforms) > 0},
	}
	seen := map[string]bool{}
	for i, pl := range p.Spec.Platforms {
		goos, arch := pl.Selector.MatchLabels["os"], pl.Selector.MatchLabels["arch"]
		wantBin := binary
		if goos == "windows" {
			wantBin += ".exe"
		}
		checks = append(checks, []struct {
			what string
			ok   bool
		}{
			{fmt.Sprintf("platform %d has a new os and arch", i), goos != "" && arch != "" && !seen[goos+"/"+arch]},
			{"platform " + goos + "/" + arch + " bin is " + wantBin, pl.Bin == wantBin},
			{"platform " + goos + "/" + arch + " sha256 is 64 hex digits", regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(pl.Sha256)},
			{"platform " + goos + "/" + arch + " uri is the release archive of its version and platform",
				strings.HasPrefix(pl.URI, "https://") && strings.Contains(pl.URI, "/"+p.Spec.Version+"/") && strings.Contains(pl.URI, "_"+goos+"_"+arch+".")},
		}...)
		seen[goos+"/"+arch] = true
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("plugins/agent.yaml: want %s", c.what)
		}
	}
}
