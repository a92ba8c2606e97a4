#!/usr/bin/env bash
# Starts the Portico demo: a Consul dev agent, the catalog and orders
# services, and the gateway. Ctrl-C stops all of it. Run it with `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/bin"
RUN_DIR="$(mktemp -d)"
CONSUL_PORT="${CONSUL_PORT:-8500}"
export CONSUL_HTTP_ADDR="127.0.0.1:${CONSUL_PORT}"

pids=()
cleanup() {
	trap - INT TERM EXIT
	echo
	echo "stopping..."
	# Reverse order: the gateway first, Consul last, so services can deregister.
	for ((i=${#pids[@]}-1; i>=0; i--)); do
		kill -TERM "${pids[$i]}" 2>/dev/null || true
		wait "${pids[$i]}" 2>/dev/null || true
	done
	rm -rf "$RUN_DIR"
	echo "stopped"
}
trap cleanup INT TERM EXIT

CONSUL="$(command -v consul || true)"
[ -n "$CONSUL" ] || CONSUL="$BIN/consul"

if curl -fsS "http://$CONSUL_HTTP_ADDR/v1/status/leader" >/dev/null 2>&1; then
	echo "using the Consul agent already running at $CONSUL_HTTP_ADDR"
else
	echo "starting Consul dev agent ($CONSUL) on $CONSUL_HTTP_ADDR; log: $RUN_DIR/consul.log"
	"$CONSUL" agent -dev -bind=127.0.0.1 -client=127.0.0.1 -http-port="$CONSUL_PORT" \
		-dns-port=-1 -grpc-port=-1 -grpc-tls-port=-1 >"$RUN_DIR/consul.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 1 100); do
		curl -fsS "http://$CONSUL_HTTP_ADDR/v1/status/leader" 2>/dev/null | grep -q : && break
		sleep 0.2
	done
fi

# Each catalog instance keeps its own in-memory store: with
# CATALOG_INSTANCES=2 you can watch load balancing (X-Instance-Id), but a
# product created on one instance is unknown to the other.
# CATALOG_FAULTS gives the last instance faults, for example
# CATALOG_INSTANCES=3 CATALOG_FAULTS="-fail-rate 1.0": watch the gateway
# retry around it and eject it (admin page, Backends).
n="${CATALOG_INSTANCES:-1}"
for i in $(seq 1 "$n"); do
	faults=()
	if [ "$i" = "$n" ] && [ -n "${CATALOG_FAULTS:-}" ]; then
		read -r -a faults <<<"$CATALOG_FAULTS"
	fi
	"$BIN/catalog" "${faults[@]}" >"$RUN_DIR/catalog-$i.log" 2>&1 &
	pids+=($!)
done
"$BIN/orders" >"$RUN_DIR/orders.log" 2>&1 &
pids+=($!)
# A demo API key for consumer "demo" with scope catalog.write. The gateway
# config holds only its SHA-256 (see docs/policies.md, "Issue an API key").
DEMO_KEY="pk_demo_$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
DEMO_HASH="$(printf %s "$DEMO_KEY" | sha256sum | cut -d' ' -f1)"
cat >"$RUN_DIR/portico.yaml" <<YAML
auth:
  api_keys:
    - consumer: demo
      sha256: $DEMO_HASH
      scopes: [catalog.write]
  api_keys_consul_prefix: portico/apikeys/
YAML
"$BIN/gateway" -log-format text -config "$RUN_DIR/portico.yaml" "$@" &
pids+=($!)

for _ in $(seq 1 100); do
	curl -fsS http://127.0.0.1:9901/readyz >/dev/null 2>&1 && break
	sleep 0.2
done

cat <<MSG

Portico is up. Service logs are in $RUN_DIR.
  REST       http://127.0.0.1:8080
  gRPC       127.0.0.1:9090
  admin page http://127.0.0.1:9901/        (routes, backends, live rates; open it in a browser)
  admin      http://127.0.0.1:9901/metrics   http://127.0.0.1:9901/readyz   http://127.0.0.1:9901/admin/v1/routes
  Consul UI  http://$CONSUL_HTTP_ADDR/ui

Demo API key (consumer "demo", scope catalog.write):
  export KEY=$DEMO_KEY

Try (X-Instance-Id says which instance answered; CATALOG_INSTANCES=2 make run starts two):
  curl -i http://127.0.0.1:8080/v1/products                        # public read
  curl -s http://127.0.0.1:8080/v1/products/prd-000001
  curl -s -X POST http://127.0.0.1:8080/v1/products -d '{"sku":"MUG-001"}'   # 401: needs credentials
  curl -s -X POST -H "X-Api-Key: \$KEY" http://127.0.0.1:8080/v1/products -d '{"sku":"MUG-001","name":"Mug","price":"1299","currency":"EUR","stock":10,"category":"kitchen"}'
  curl -s -X PATCH -H "X-Api-Key: \$KEY" http://127.0.0.1:8080/v1/products/prd-000001 -d '{"price":"999"}'
  curl -s -X POST -H "X-Api-Key: \$KEY" http://127.0.0.1:8080/v1/orders -d '{"items":[{"productId":"prd-000001","quantity":2}]}'
  curl -N -H "X-Api-Key: \$KEY" http://127.0.0.1:8080/v1/orders/ord-000001:watch
  curl -s -H "X-Api-Key: \$KEY" http://127.0.0.1:8080/v1/orders/ord-000001/details   # composed by the gateway: the order and its products
  curl -s -H "X-Api-Key: \$KEY" "http://127.0.0.1:8080/v1/home?pageSize=3"         # products and your orders, fetched in parallel
  bin/grpcurl -plaintext 127.0.0.1:9090 list
  bin/grpcurl -plaintext -d '{"id":"prd-000002"}' 127.0.0.1:9090 catalog.v1.CatalogService/GetProduct
  bin/grpcurl -plaintext -H "x-api-key: \$KEY" -d '{"id":"ord-000001"}' 127.0.0.1:9090 orders.v1.OrderService/WatchOrder
  bin/gateway -config $RUN_DIR/portico.yaml -routes                # route and policy table

Ctrl-C stops everything.
MSG

wait -n "${pids[@]}" || true
