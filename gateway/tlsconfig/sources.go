package tlsconfig

// Sources loads each set of files once however many users share it (a
// gateway's backend_tls is usually shared by every backend).
type Sources struct {
	opts    []Option
	byFiles map[Files]*Source
}

// NewSources makes a cache of Sources made with opts.
func NewSources(opts ...Option) *Sources {
	return &Sources{opts: opts, byFiles: map[Files]*Source{}}
}

// Get returns the Source of files, loading it the first time; isNew says
// it was loaded now and has files to watch, so its owner should Start and
// Close it. Empty Files (the system roots, no certificate) are not shared
// or watched.
func (s *Sources) Get(name string, files Files) (src *Source, isNew bool, err error) {
	none := files == (Files{})
	if src, ok := s.byFiles[files]; ok && !none {
		return src, false, nil
	}
	src, err = New(name, files, s.opts...)
	if err != nil {
		return nil, false, err
	}
	if none {
		return src, false, nil
	}
	s.byFiles[files] = src
	return src, true, nil
}
