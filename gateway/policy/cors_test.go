package policy

import (
	"strings"
	"testing"
)

func TestCORSValidate(t *testing.T) {
	for _, tc := range []struct {
		origins     []string
		credentials bool
		wantErr     string // "": valid
	}{
		{[]string{"https://shop.example.com"}, false, ""},
		{[]string{"https://shop.example.com", "http://localhost:5173"}, true, ""},
		{[]string{"*"}, false, ""},
		{[]string{"*"}, true, `allowed_origins "*" cannot be combined with allow_credentials`},
		{[]string{"https://shop.example.com", "*"}, true, `allowed_origins "*" cannot be combined with allow_credentials`},
		{[]string{"https://*.example.com"}, false, `allowed_origins "https://*.example.com" is not an origin`},
		{[]string{"https://*.example.com"}, true, `allowed_origins "https://*.example.com" is not an origin`},
		{[]string{"*.example.com"}, false, "is not an origin"},
		{[]string{"https://shop.example.com/"}, false, "is not an origin"},
		{[]string{"https://shop.example.com/app"}, false, "is not an origin"},
		{[]string{"https://shop.example.com?x=1"}, false, "is not an origin"},
		{[]string{"https://user@shop.example.com"}, false, "is not an origin"},
		{[]string{"shop.example.com"}, false, "is not an origin"},
		{[]string{"https://"}, false, "is not an origin"},
		{[]string{"https://shop.example.com:*"}, false, "is not an origin"},
		{[]string{""}, false, "is not an origin"},
		{nil, false, "allowed_origins is empty"},
	} {
		err := (&CORS{AllowedOrigins: tc.origins, AllowCredentials: tc.credentials}).Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q credentials %v: %v, want valid", tc.origins, tc.credentials, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "cors: ")):
			t.Errorf("%q credentials %v: %v, want an error with %q", tc.origins, tc.credentials, err, tc.wantErr)
		}
	}
}
