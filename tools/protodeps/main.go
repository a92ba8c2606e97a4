// Command protodeps writes the third-party .proto files that Portico's protos
// import (google/api/*, buf/validate/*) into a git-ignored folder, so buf can
// resolve them offline without the BSR and without committing copies.
//
// The files are rebuilt from the descriptors registered by the Go packages
// that already ship them, so their content follows the versions pinned in
// tools/go.mod.
package main

import (
	"flag"
	"log"
	"os"

	validatepb "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"github.com/jhump/protoreflect/v2/protoprint"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func main() {
	out := flag.String("out", "build/protodeps", "directory to write the .proto files into")
	flag.Parse()

	files := []protoreflect.FileDescriptor{
		annotations.File_google_api_annotations_proto,
		annotations.File_google_api_http_proto,
		annotations.File_google_api_field_behavior_proto,
		validatepb.File_buf_validate_validate_proto,
	}
	if err := os.RemoveAll(*out); err != nil {
		log.Fatal(err)
	}
	p := &protoprint.Printer{}
	if err := p.PrintProtosToFileSystem(files, *out); err != nil {
		log.Fatalf("protodeps: %v", err)
	}
}
