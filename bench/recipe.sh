#!/usr/bin/env bash
# bench/recipe.sh — the recipe "IoT Device Registry with IoT Core" (v1.2,
# id c2e5a8d1) run as written with the AWS CLI v1, against a LOCAL emulator.
#
# Runs the recipe's Preparation, Steps 1-8 and Cleanup 1-5, in the recipe's
# order and with the recipe's arguments. The Validation & Testing section is
# not run (it is not part of "create + remove"; its iot-data publish / logs
# checks need the rules engine, which the emulator does not run).
#
# Usage:
#   bash bench/recipe.sh --endpoint-url http://127.0.0.1:PORT [--iam-sleep SECONDS]
#   (or set AWS_ENDPOINT_URL instead of --endpoint-url)
#
# Environment:
#   RECIPE_IAM_SLEEP  seconds for the recipe's "sleep 10" after the IAM role
#                     (default 10, the recipe's value; --iam-sleep overrides)
#   RECIPE_VERBATIM   1 = run the recipe's create-thing-type and create-thing
#                     exactly as printed (they fail; see below). Default 0.
#   AWS_CLI           aws executable (default: /work/main/.venv/bin/aws, i.e.
#                     the repo's .venv/bin/aws; install bench/requirements.txt)
#
# Deviations from the recipe text:
#   * RECIPE BUG: the Preparation's `aws iot create-thing-type
#     --thing-type-description "..."` is rejected by the AWS CLI itself
#     ("Unknown options: --thing-type-description"; no such option in CLI v1
#     or v2), so the recipe as printed stops there, before any resource. This
#     script passes the description as
#     `--thing-type-properties thingTypeDescription="..."` instead.
#   * RECIPE BUG: Step 1's `aws iot create-thing ... --attribute-payload
#     attributes='{"deviceType":"temperature",...}'` is rejected by the CLI's
#     shorthand parser ("Error parsing parameter '--attribute-payload':
#     Expected: '=', received: '"'"). This script passes the same attributes
#     as JSON: --attribute-payload '{"attributes": {...}}'.
#   RECIPE_VERBATIM=1 runs both commands exactly as printed (and fails).
# and, forced by the local setting:
#   * every aws call gets --endpoint-url (via the aws() wrapper below), fake
#     credentials (testing/testing) and region us-east-1; ~/.aws is ignored
#     (a private config file holding only `region = us-east-1` is used).
#   * Cleanup 4 runs `aws iot deprecate-thing-type` before delete-thing-type:
#     the recipe omits it, but AWS (and the emulator) refuse to delete a thing
#     type that is not deprecated (real AWS even wants 5 minutes in between).
#   * `export X=$(cmd)` is split into `X=$(cmd); export X` so that a failing
#     command substitution aborts the script (export would mask it).
#   * files are written in a throw-away directory, removed at exit.
# Any failing call aborts the whole script with a message and exit status 1.
set -Eeuo pipefail
shopt -s inherit_errexit

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

ENDPOINT="${AWS_ENDPOINT_URL:-}"
IAM_SLEEP="${RECIPE_IAM_SLEEP:-10}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --endpoint-url) ENDPOINT="$2"; shift 2 ;;
        --endpoint-url=*) ENDPOINT="${1#*=}"; shift ;;
        --iam-sleep) IAM_SLEEP="$2"; shift 2 ;;
        --iam-sleep=*) IAM_SLEEP="${1#*=}"; shift ;;
        -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "recipe.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

# Safety: only ever talk to a local emulator.
case "$ENDPOINT" in
    http://127.0.0.1:*|http://localhost:*|http://\[::1\]:*) ;;
    *) echo "recipe.sh: refusing to run: --endpoint-url must be a local http://127.0.0.1:PORT emulator (got '${ENDPOINT}')" >&2
       exit 2 ;;
esac
if ! [[ "$IAM_SLEEP" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "recipe.sh: RECIPE_IAM_SLEEP / --iam-sleep must be a number of seconds (got '$IAM_SLEEP')" >&2
    exit 2
fi

AWS_CLI="${AWS_CLI:-$REPO_DIR/.venv/bin/aws}"
if [[ ! -x "$AWS_CLI" ]]; then
    echo "recipe.sh: AWS CLI not found at $AWS_CLI (run: $REPO_DIR/.venv/bin/pip install -r $REPO_DIR/bench/requirements.txt)" >&2
    exit 2
fi

# Fake credentials; never read the user's ~/.aws files.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE AWS_ENDPOINT_URL
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_EC2_METADATA_DISABLED=true AWS_PAGER=""

AWS_CALLS=0
aws() {
    AWS_CALLS=$((AWS_CALLS + 1))
    local rc=0
    "$AWS_CLI" --endpoint-url "$ENDPOINT" "$@" || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "recipe.sh: FAILED (exit $rc) at line ${BASH_LINENO[0]}: aws $*" >&2
        exit 1
    fi
}

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/iotreg-recipe.XXXXXX")
trap 'rc=$?; echo "recipe.sh: FAILED (exit $rc) at line $LINENO: $BASH_COMMAND" >&2; exit 1' ERR
trap 'rm -rf "$WORKDIR"' EXIT
cd "$WORKDIR"
# The recipe's prerequisite "AWS CLI ... configured": a private config file
# with just the region (`aws configure get region` reads only the file).
printf '[default]\nregion = us-east-1\n' > "$WORKDIR/.aws-config"
export AWS_CONFIG_FILE="$WORKDIR/.aws-config"

if ! command -v zip >/dev/null 2>&1; then
    # The recipe calls `zip lambda-function.zip lambda-function.py`.
    zip() {
        "$REPO_DIR/.venv/bin/python" - "$@" <<'PY'
import sys, zipfile
out, *files = sys.argv[1:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for f in files:
        z.write(f)
        print(f"  adding: {f}")
PY
    }
fi

need() { [[ -n "$2" && "$2" != "None" ]] || { echo "recipe.sh: $1 is empty" >&2; exit 1; }; }

# ---------------------------------------------------------------- Preparation
# Set environment variables
AWS_REGION=$(aws configure get region)
export AWS_REGION
AWS_ACCOUNT_ID=$(aws sts get-caller-identity \
    --query Account --output text)
export AWS_ACCOUNT_ID
need AWS_REGION "$AWS_REGION"; need AWS_ACCOUNT_ID "$AWS_ACCOUNT_ID"

# Generate unique identifiers for resources
RANDOM_SUFFIX=$(aws secretsmanager get-random-password \
    --exclude-punctuation --exclude-uppercase \
    --password-length 6 --require-each-included-type \
    --output text --query RandomPassword)
need RANDOM_SUFFIX "$RANDOM_SUFFIX"

export IOT_THING_TYPE="TemperatureSensor"
export IOT_THING_NAME="temperature-sensor-${RANDOM_SUFFIX}"
export IOT_POLICY_NAME="device-policy-${RANDOM_SUFFIX}"
export IOT_RULE_NAME="sensor_data_rule_${RANDOM_SUFFIX}"

# Create Thing Type for device categorization
if [[ "${RECIPE_VERBATIM:-0}" == 1 ]]; then
    # Exactly as printed in the recipe. `--thing-type-description` is not an
    # option of `aws iot create-thing-type` (CLI v1 or v2): the CLI exits 255
    # with "Unknown options: --thing-type-description, ...".
    aws iot create-thing-type \
        --thing-type-name ${IOT_THING_TYPE} \
        --thing-type-description "Temperature sensor devices for production monitoring"
else
    # Corrected: the description goes in --thing-type-properties.
    aws iot create-thing-type \
        --thing-type-name ${IOT_THING_TYPE} \
        --thing-type-properties thingTypeDescription="Temperature sensor devices for production monitoring"
fi

echo "Environment configured for IoT device: ${IOT_THING_NAME}"

# --------------------------------------------------------------------- Step 1
# Create IoT Thing with device attributes
if [[ "${RECIPE_VERBATIM:-0}" == 1 ]]; then
    # Exactly as printed in the recipe. The CLI's shorthand parser does not
    # accept JSON after `attributes=`: exit 255, "Error parsing parameter
    # '--attribute-payload': Expected: '=', received: '"'".
    aws iot create-thing \
        --thing-name ${IOT_THING_NAME} \
        --thing-type-name ${IOT_THING_TYPE} \
        --attribute-payload attributes='{
            "deviceType":"temperature",
            "manufacturer":"SensorCorp",
            "model":"TC-2000",
            "location":"ProductionFloor-A",
            "firmware":"1.0.0"
        }'
else
    # Corrected: the same five attributes, as a JSON AttributePayload.
    aws iot create-thing \
        --thing-name ${IOT_THING_NAME} \
        --thing-type-name ${IOT_THING_TYPE} \
        --attribute-payload '{"attributes": {
            "deviceType":"temperature",
            "manufacturer":"SensorCorp",
            "model":"TC-2000",
            "location":"ProductionFloor-A",
            "firmware":"1.0.0"
        }}'
fi

echo "✅ IoT Thing '${IOT_THING_NAME}' created in device registry"

# --------------------------------------------------------------------- Step 2
# Create device certificate and private key
aws iot create-keys-and-certificate \
    --set-as-active \
    --certificate-pem-outfile device-cert.pem \
    --public-key-outfile device-public-key.pem \
    --private-key-outfile device-private-key.pem \
    --query 'certificateArn' --output text > cert-arn.txt

CERT_ARN=$(cat cert-arn.txt)
export CERT_ARN
need CERT_ARN "$CERT_ARN"
echo "✅ Device certificate created: ${CERT_ARN}"

# --------------------------------------------------------------------- Step 3
# Create IoT policy with least privilege permissions
cat > device-policy.json << EOF
{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "iot:Connect"
            ],
            "Resource": [
                "arn:aws:iot:${AWS_REGION}:${AWS_ACCOUNT_ID}:client/\${iot:Connection.Thing.ThingName}"
            ]
        },
        {
            "Effect": "Allow",
            "Action": [
                "iot:Publish"
            ],
            "Resource": [
                "arn:aws:iot:${AWS_REGION}:${AWS_ACCOUNT_ID}:topic/sensor/temperature/\${iot:Connection.Thing.ThingName}"
            ]
        },
        {
            "Effect": "Allow",
            "Action": [
                "iot:GetThingShadow",
                "iot:UpdateThingShadow"
            ],
            "Resource": [
                "arn:aws:iot:${AWS_REGION}:${AWS_ACCOUNT_ID}:thing/\${iot:Connection.Thing.ThingName}"
            ]
        }
    ]
}
EOF

aws iot create-policy \
    --policy-name ${IOT_POLICY_NAME} \
    --policy-document file://device-policy.json

echo "✅ IoT policy '${IOT_POLICY_NAME}' created with restricted permissions"

# --------------------------------------------------------------------- Step 4
# Link policy to device certificate
aws iot attach-policy \
    --policy-name ${IOT_POLICY_NAME} \
    --target ${CERT_ARN}

echo "✅ Policy attached to device certificate"

# --------------------------------------------------------------------- Step 5
# Connect certificate to IoT Thing
aws iot attach-thing-principal \
    --thing-name ${IOT_THING_NAME} \
    --principal ${CERT_ARN}

echo "✅ Certificate associated with IoT Thing"

# --------------------------------------------------------------------- Step 6
# Create Lambda execution role
cat > lambda-trust-policy.json << EOF
{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {
                "Service": "lambda.amazonaws.com"
            },
            "Action": "sts:AssumeRole"
        }
    ]
}
EOF

aws iam create-role \
    --role-name iot-lambda-role-${RANDOM_SUFFIX} \
    --assume-role-policy-document file://lambda-trust-policy.json

# Attach basic Lambda execution policy
aws iam attach-role-policy \
    --role-name iot-lambda-role-${RANDOM_SUFFIX} \
    --policy-arn arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole

# Wait for role to be available  (recipe: `sleep 10`; RECIPE_IAM_SLEEP)
sleep "$IAM_SLEEP"

# Create Lambda function code
cat > lambda-function.py << EOF
import json
import boto3
import logging
from datetime import datetime

logger = logging.getLogger()
logger.setLevel(logging.INFO)

def lambda_handler(event, context):
    logger.info(f"Received IoT data: {json.dumps(event)}")
    
    # Extract device data
    device_name = event.get('device', 'unknown')
    temperature = event.get('temperature', 0)
    timestamp = event.get('timestamp', datetime.utcnow().isoformat())
    
    # Process temperature data with business logic
    if temperature > 80:
        logger.warning(f"High temperature alert: {temperature}°C from {device_name}")
        alert_level = "HIGH"
    elif temperature > 60:
        logger.info(f"Moderate temperature warning: {temperature}°C from {device_name}")
        alert_level = "MEDIUM"
    else:
        logger.info(f"Normal temperature reading: {temperature}°C from {device_name}")
        alert_level = "NORMAL"
        
    # Return processed data for downstream systems
    return {
        'statusCode': 200,
        'body': json.dumps({
            'message': 'Data processed successfully',
            'device': device_name,
            'temperature': temperature,
            'alert_level': alert_level,
            'processed_timestamp': datetime.utcnow().isoformat()
        })
    }
EOF

# Package and deploy Lambda function
zip lambda-function.zip lambda-function.py

aws lambda create-function \
    --function-name iot-data-processor-${RANDOM_SUFFIX} \
    --runtime python3.12 \
    --role arn:aws:iam::${AWS_ACCOUNT_ID}:role/iot-lambda-role-${RANDOM_SUFFIX} \
    --handler lambda-function.lambda_handler \
    --zip-file fileb://lambda-function.zip \
    --description "Process IoT sensor data from temperature devices" \
    --timeout 60 \
    --memory-size 256

echo "✅ Lambda function created for IoT data processing"

# --------------------------------------------------------------------- Step 7
# Create IoT rule for temperature data processing
cat > iot-rule.json << EOF
{
    "ruleName": "${IOT_RULE_NAME}",
    "topicRulePayload": {
        "sql": "SELECT *, topic(3) as device, timestamp() as aws_timestamp FROM 'sensor/temperature/+'",
        "description": "Route temperature sensor data to Lambda for processing and alerting",
        "actions": [
            {
                "lambda": {
                    "functionArn": "arn:aws:lambda:${AWS_REGION}:${AWS_ACCOUNT_ID}:function:iot-data-processor-${RANDOM_SUFFIX}"
                }
            }
        ],
        "ruleDisabled": false,
        "awsIotSqlVersion": "2016-03-23"
    }
}
EOF

aws iot create-topic-rule --cli-input-json file://iot-rule.json

# Grant IoT permission to invoke Lambda function
aws lambda add-permission \
    --function-name iot-data-processor-${RANDOM_SUFFIX} \
    --statement-id iot-lambda-permission \
    --action lambda:InvokeFunction \
    --principal iot.amazonaws.com \
    --source-arn arn:aws:iot:${AWS_REGION}:${AWS_ACCOUNT_ID}:rule/${IOT_RULE_NAME}

echo "✅ IoT rule created to route sensor data to Lambda"

# --------------------------------------------------------------------- Step 8
# Initialize device shadow with default state
cat > device-shadow.json << EOF
{
    "state": {
        "desired": {
            "temperature_threshold": 75,
            "reporting_interval": 60,
            "active": true,
            "alert_enabled": true
        },
        "reported": {
            "temperature": 22.5,
            "battery_level": 95,
            "firmware_version": "1.0.0",
            "last_update": "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)"
        }
    }
}
EOF

aws iot-data update-thing-shadow \
    --thing-name ${IOT_THING_NAME} \
    --payload file://device-shadow.json \
    outfile

echo "✅ Device shadow initialized with default configuration"

# ================================================================== Cleanup 1
# Delete IoT rule
aws iot delete-topic-rule --rule-name ${IOT_RULE_NAME}

# Remove Lambda permission
aws lambda remove-permission \
    --function-name iot-data-processor-${RANDOM_SUFFIX} \
    --statement-id iot-lambda-permission

echo "✅ Deleted IoT rule and Lambda permissions"

# ================================================================== Cleanup 2
# Delete Lambda function
aws lambda delete-function \
    --function-name iot-data-processor-${RANDOM_SUFFIX}

# Detach and delete IAM role
aws iam detach-role-policy \
    --role-name iot-lambda-role-${RANDOM_SUFFIX} \
    --policy-arn arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole

aws iam delete-role --role-name iot-lambda-role-${RANDOM_SUFFIX}

echo "✅ Deleted Lambda function and IAM role"

# ================================================================== Cleanup 3
# Detach certificate from IoT Thing
aws iot detach-thing-principal \
    --thing-name ${IOT_THING_NAME} \
    --principal ${CERT_ARN}

# Detach policy from certificate
aws iot detach-policy \
    --policy-name ${IOT_POLICY_NAME} \
    --target ${CERT_ARN}

# Deactivate and delete certificate
CERT_ID=$(echo ${CERT_ARN} | cut -d'/' -f2)
need CERT_ID "$CERT_ID"
aws iot update-certificate \
    --certificate-id ${CERT_ID} --new-status INACTIVE
aws iot delete-certificate --certificate-id ${CERT_ID}

echo "✅ Deleted device certificate"

# ================================================================== Cleanup 4
# Delete IoT policy
aws iot delete-policy --policy-name ${IOT_POLICY_NAME}

# Delete IoT Thing
aws iot delete-thing --thing-name ${IOT_THING_NAME}

# Not in the recipe: a thing type must be deprecated before it can be deleted.
aws iot deprecate-thing-type --thing-type-name ${IOT_THING_TYPE}

# Delete Thing Type (will only succeed if no things use it)
aws iot delete-thing-type --thing-type-name ${IOT_THING_TYPE}

echo "✅ Deleted IoT policy, Thing, and Thing Type"

# ================================================================== Cleanup 5
# Remove generated files
rm -f device-cert.pem device-public-key.pem device-private-key.pem
rm -f cert-arn.txt device-policy.json lambda-trust-policy.json
rm -f lambda-function.py lambda-function.zip iot-rule.json
rm -f device-shadow.json outfile shadow-output.json

echo "✅ Cleaned up local files"

echo "recipe.sh: OK (${AWS_CALLS} aws CLI calls, IAM sleep ${IAM_SLEEP}s)" >&2
