// Command mint-token seals a session token as edge's login would, so the
// benchmark can measure edge with identity on (auth = "token") without a
// WeChat login round: the harness sends it to edge only, through
// GATEWAY_HEADERS.
//
//	go run ./bench/mint-token -secret "$SECRET" -appid wxbench -openid o-bench
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"edge/internal/identity"
)

func main() {
	secret := flag.String("secret", "", "the [sessions] secret (at least 32 bytes)")
	appid := flag.String("appid", "wxbench", "the app's appid")
	openid := flag.String("openid", "o-bench-user", "the openid the token stands for")
	ttl := flag.Duration("ttl", 24*time.Hour, "the token's lifetime")
	flag.Parse()
	sealer, err := identity.NewSealer([][]byte{[]byte(*secret)}, *ttl, nil, time.Now)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mint-token:", err)
		os.Exit(1)
	}
	token, _, err := sealer.Issue(*appid, *openid, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mint-token:", err)
		os.Exit(1)
	}
	fmt.Println(token)
}
