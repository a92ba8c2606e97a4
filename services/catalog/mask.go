package catalog

import (
	"slices"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
)

// updatePaths returns the Product fields an update writes. Which fields are
// writable is read from the proto's OUTPUT_ONLY annotations rather than
// listed here, so a field added to Product is updatable without touching
// this file.
func updatePaths(mask *fieldmaskpb.FieldMask, in *catalogv1.Product) ([]protoreflect.FieldDescriptor, error) {
	fields := in.ProtoReflect().Descriptor().Fields()
	if len(mask.GetPaths()) == 0 {
		// An empty mask means "what the client set". Proto3 scalars cannot
		// tell zero from unset, so a field cannot be cleared this way; that
		// needs an explicit mask. The id is set too, but only to say which
		// product, so output-only fields are skipped rather than rejected.
		var out []protoreflect.FieldDescriptor
		in.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			if !outputOnly(fd) {
				out = append(out, fd)
			}
			return true
		})
		return out, nil
	}
	out := make([]protoreflect.FieldDescriptor, 0, len(mask.GetPaths()))
	for _, path := range mask.GetPaths() {
		fd := fields.ByName(protoreflect.Name(path))
		switch {
		case fd == nil:
			return nil, status.Errorf(codes.InvalidArgument,
				"update_mask: unknown field %q; writable fields are %v", path, writableNames(fields))
		case outputOnly(fd):
			return nil, status.Errorf(codes.InvalidArgument,
				"update_mask: field %q is output only and cannot be updated", path)
		}
		out = append(out, fd)
	}
	return out, nil
}

// applyPaths copies the given fields from src to dst; a field that is zero in
// src is cleared in dst.
func applyPaths(dst, src *catalogv1.Product, paths []protoreflect.FieldDescriptor) {
	d, s := dst.ProtoReflect(), src.ProtoReflect()
	for _, fd := range paths {
		if s.Has(fd) {
			d.Set(fd, s.Get(fd))
		} else {
			d.Clear(fd)
		}
	}
}

func outputOnly(fd protoreflect.FieldDescriptor) bool {
	behaviors, _ := proto.GetExtension(fd.Options(), annotations.E_FieldBehavior).([]annotations.FieldBehavior)
	return slices.Contains(behaviors, annotations.FieldBehavior_OUTPUT_ONLY)
}

func writableNames(fields protoreflect.FieldDescriptors) []string {
	var names []string
	for i := range fields.Len() {
		if fd := fields.Get(i); !outputOnly(fd) {
			names = append(names, string(fd.Name()))
		}
	}
	return names
}
