#!/usr/bin/env python3
"""A device written with paho-mqtt doing fleet provisioning by claim, given only the claim
files `iotreg up` wrote and the gateway's address.

    paho_claim.py HOST PORT CA CLAIM_CERT CLAIM_KEY TEMPLATE SERIAL THING OUT_DIR

Makes its own key and CSR (cryptography), connects with the claim certificate (client id =
SERIAL), subscribes to the accepted/rejected answers, asks for a certificate on
$aws/certificates/create-from-csr/json, registers through
$aws/provisioning-templates/TEMPLATE/provision/json with the ownership token and
{ThingName, SerialNumber}, writes OUT_DIR/THING-certificate.pem.crt and
OUT_DIR/THING-private.pem.key, reconnects as THING with its new certificate and publishes a
reading at QoS 1. Prints one JSON line {"thing": ..., "certificate_id": ..., "puback": true}
and exits 0, or prints what failed (with AWS's errorCode when rejected) and exits 1. Every
wait is bounded.
"""

import json
import os
import sys
import threading

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

WAIT = 15.0


class Connection:
    def __init__(self, host, port, ca, cert, key, client_id):
        self.events = {n: threading.Event() for n in ("connected", "subscribed", "acked")}
        self.messages = {}
        self.message_event = threading.Event()
        self.connack = None
        self.suback = None
        self.acked_mid = None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=mqtt.MQTTv311)
        c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
        c.on_connect = self.on_connect
        c.on_subscribe = self.on_subscribe
        c.on_message = self.on_message
        c.on_publish = self.on_publish
        self.client = c
        c.connect(host, port, keepalive=30)
        c.loop_start()
        if not self.events["connected"].wait(WAIT) or self.connack != 0:
            raise SystemExit(f"no CONNACK 0 for {client_id}: {self.connack}")

    def on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = getattr(reason_code, "value", reason_code)
        self.events["connected"].set()

    def on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.suback = [getattr(c, "value", c) for c in reason_codes]
        self.events["subscribed"].set()

    def on_message(self, client, userdata, message):
        self.messages[message.topic] = json.loads(message.payload or b"null")
        self.message_event.set()

    def on_publish(self, client, userdata, mid, reason_code, properties):
        if mid == self.acked_mid:
            self.events["acked"].set()

    def subscribe(self, topics):
        self.client.subscribe([(t, 1) for t in topics])
        if not self.events["subscribed"].wait(WAIT) or 128 in self.suback:
            raise SystemExit(f"subscription refused: {self.suback}")

    def publish(self, topic, doc):
        info = self.client.publish(topic, json.dumps(doc), qos=1)
        self.acked_mid = info.mid
        if info.is_published():
            self.events["acked"].set()
        if not self.events["acked"].wait(WAIT):
            raise SystemExit(f"no PUBACK for {topic}")
        self.events["acked"].clear()

    def answer(self, base):
        """The accepted document, or exit with the rejection."""
        deadline = threading.Event()
        for _ in range(int(WAIT * 10)):
            if base + "/accepted" in self.messages:
                return self.messages.pop(base + "/accepted")
            if base + "/rejected" in self.messages:
                r = self.messages.pop(base + "/rejected")
                print(json.dumps({"rejected": base, "errorCode": r.get("errorCode"),
                                  "errorMessage": r.get("errorMessage")}))
                raise SystemExit(1)
            deadline.wait(0.1)
        raise SystemExit(f"no answer on {base}/accepted or /rejected")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def main() -> int:
    host, port, ca, claim_cert, claim_key, template, serial, thing, out = sys.argv[1:10]
    port = int(port)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, thing)]))
           .sign(key, hashes.SHA256()))
    csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()

    claim = Connection(host, port, ca, claim_cert, claim_key, serial)
    create = "$aws/certificates/create-from-csr/json"
    provision = f"$aws/provisioning-templates/{template}/provision/json"
    claim.subscribe([create + "/accepted", create + "/rejected",
                     provision + "/accepted", provision + "/rejected"])
    claim.publish(create, {"certificateSigningRequest": csr_pem})
    created = claim.answer(create)
    cert = x509.load_pem_x509_certificate(created["certificatePem"].encode())
    mine = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = cert.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    if mine != theirs:
        print("the certificate does not carry the CSR's public key")
        return 1
    claim.publish(provision, {"certificateOwnershipToken": created["certificateOwnershipToken"],
                              "parameters": {"ThingName": thing, "SerialNumber": serial}})
    registered = claim.answer(provision)
    claim.close()

    cert_file = os.path.join(out, f"{thing}-certificate.pem.crt")
    key_file = os.path.join(out, f"{thing}-private.pem.key")
    with open(cert_file, "w") as f:
        f.write(created["certificatePem"])
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))

    device = Connection(host, port, ca, cert_file, key_file, thing)
    device.publish(f"sensor/temperature/{thing}",
                   {"temperature": 21.5, "humidity": 40, "device": thing, "battery_level": 90})
    device.close()
    print(json.dumps({"thing": registered.get("thingName", thing),
                      "certificate_id": created["certificateId"], "puback": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
