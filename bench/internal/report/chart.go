package report

import (
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var pathColors = map[string]color.Color{
	Direct:      color.RGBA{0x44, 0x44, 0x44, 0xff},
	Portico:     color.RGBA{0x1f, 0x77, 0xb4, 0xff},
	PorticoOff:  color.RGBA{0xae, 0xc7, 0xe8, 0xff},
	GRPCGateway: color.RGBA{0xff, 0x7f, 0x0e, 0xff},
	Vanguard:    color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	Nginx:       color.RGBA{0xd6, 0x27, 0x28, 0xff},
}

var chartPaths = []string{Direct, Portico, PorticoOff, Nginx, GRPCGateway, Vanguard}

// Chart draws throughput relative to each mode's reference and open-loop
// p99, one group of bars per mode and workload, one bar per path, and
// writes it as a PNG.
func (r *Run) Chart(path string) error {
	groups := r.groups()
	var labels []string
	for _, g := range groups {
		labels = append(labels, g[0]+"\n"+g[1])
	}
	thr, err := r.barPlot(groups, labels, "throughput, x the reference (direct for gRPC, grpc-gateway for REST, vanguard for Connect and gRPC-Web, the same path in plaintext for a TLS mode)", func(_, _ string, p *Phase) float64 {
		// The median of the ratios round by round, as latest.md gives it.
		if s := ThroughputRatio(p, r.Ref(p)); s.Valid() {
			return s.Median
		}
		return 0
	})
	if err != nil {
		return err
	}
	lat, err := r.barPlot(groups, labels, "open-loop p99 latency, ms, at a rate every path sustains (half the slowest path's throughput); REST's direct bar is the gRPC call", func(_, _ string, p *Phase) float64 {
		if p.Common == nil {
			return 0
		}
		return p.Common.P99 / 1e3
	})
	if err != nil {
		return err
	}
	const rows = 2
	// Wider with more groups, so that a group's bars keep apart.
	img := vgimg.New(vg.Length(max(16, 0.8*float64(len(groups))))*vg.Inch, 10*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadX: vg.Points(6), PadY: vg.Points(12)}
	canvases := plot.Align([][]*plot.Plot{{thr}, {lat}}, tiles, dc)
	thr.Draw(canvases[0][0])
	lat.Draw(canvases[1][0])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(f)
	return err
}

func (r *Run) barPlot(groups [][2]string, labels []string, title string, value func(mode, wl string, p *Phase) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Legend.Top = true
	p.Legend.Left = false
	width := vg.Points(9)
	var present []string
	for _, path := range chartPaths {
		for _, g := range groups {
			if r.Find(g[0], g[1], path) != nil {
				present = append(present, path)
				break
			}
		}
	}
	top := 0.0
	for i, path := range present {
		vals := make(plotter.Values, len(groups))
		for j, g := range groups {
			ph := r.Find(g[0], g[1], path)
			if ph == nil && path == Direct && g[0] == REST {
				ph = r.RESTReference[g[1]]
			}
			if ph != nil {
				vals[j] = value(g[0], g[1], ph)
				top = max(top, vals[j])
			}
		}
		bars, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return nil, err
		}
		bars.LineStyle.Width = 0
		bars.Color = pathColors[path]
		bars.Offset = width * vg.Length(float64(i)-float64(len(present)-1)/2)
		p.Add(bars)
		p.Legend.Add(path, bars)
	}
	// Headroom, so that the legend in the corner covers no bar.
	p.Y.Min, p.Y.Max = 0, top*1.4
	p.NominalX(labels...)
	p.Add(plotter.NewGrid())
	return p, nil
}
