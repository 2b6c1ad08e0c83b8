package opsproof

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

type dashboard struct {
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	// A collapsed row holds its panels.
	Panels []panel `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Query      any         `json:"query"`
	Datasource *datasource `json:"datasource"`
	IncludeAll bool        `json:"includeAll"`
	AllValue   string      `json:"allValue"`
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(readRepoFile(t, "deploy/grafana/edge-dashboard.json")))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("edge-dashboard.json: %v", err)
	}
	return &d
}

// flatPanels lists every panel, rows' nested panels included.
func (d *dashboard) flatPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// panelQuery is one PromQL expression of the dashboard, named for failure
// messages.
type panelQuery struct {
	where string
	expr  string
}

func (d *dashboard) queries() []panelQuery {
	var out []panelQuery
	for _, p := range d.flatPanels() {
		for _, tg := range p.Targets {
			out = append(out, panelQuery{where: p.Title + " / " + tg.RefID, expr: tg.Expr})
		}
	}
	return out
}

var labelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// variableQuery returns the selector and label of a label_values variable.
func (v *variable) labelValues(t *testing.T) (selector, label string) {
	t.Helper()
	var q string
	switch x := v.Query.(type) {
	case string:
		q = x
	case map[string]any:
		q, _ = x["query"].(string)
	}
	m := labelValues.FindStringSubmatch(q)
	if m == nil {
		t.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, q)
	}
	return m[1], m[2]
}

func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d; current Grafana writes 39 or later", d.SchemaVersion)
	}
	if d.UID == "" {
		t.Error("no uid: provisioning and links need a stable one")
	}
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v := vars["datasource"]; v.Type != "datasource" || v.Query != "prometheus" {
		t.Errorf("datasource variable: %+v", v)
	}
	for _, name := range []string{"instance", "route"} {
		v, ok := vars[name]
		if !ok || v.Type != "query" || !v.IncludeAll {
			t.Errorf("%s variable missing or not a multi-value query: %+v", name, v)
			continue
		}
		if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("%s variable does not use ${datasource}", name)
		}
		v.labelValues(t)
	}

	rows := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range d.flatPanels() {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W <= 0 || p.GridPos.H <= 0 {
			t.Errorf("panel %q: gridPos %+v does not fit 24 columns", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			rows[p.Title] = true
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the ${datasource} variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: query %s is empty", p.Title, tg.RefID)
			}
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: query %s does not use ${datasource}", p.Title, tg.RefID)
			}
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q: query %s ignores the instance selector", p.Title, tg.RefID)
			}
		}
	}
	for _, r := range []string{"Overview", "Routes", "Upstreams", "Security", "TLS", "Process"} {
		if !rows[r] {
			t.Errorf("no %q row", r)
		}
	}
}
