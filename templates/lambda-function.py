import json
import os
import time
import boto3
import logging
from botocore.exceptions import ClientError
from datetime import datetime

logger = logging.getLogger()
logger.setLevel(logging.INFO)

# Set by iotreg when monitoring is on: HIGH readings are published to this SNS topic.
ALERT_TOPIC_ARN = os.environ.get('ALERT_TOPIC_ARN')
sns = boto3.client('sns') if ALERT_TOPIC_ARN else None
# IAM takes seconds to propagate a new role policy: right after a deployment, the first
# alerts may be refused. Refusals are retried this long (seconds) before the alert fails.
AUTHORIZATION_RETRY_DELAYS = (1, 2, 4, 8)

def publish_alert(device_name, temperature, alert_level, timestamp):
    message = {
        'device': device_name,
        'temperature': temperature,
        'alert_level': alert_level,
        'timestamp': timestamp,
        'processed_timestamp': datetime.utcnow().isoformat()
    }
    # SNS subjects are ASCII only, at most 100 characters.
    subject = f"{alert_level} temperature {temperature} C from {device_name}"[:100]
    delays = list(AUTHORIZATION_RETRY_DELAYS)
    while True:
        try:
            response = sns.publish(TopicArn=ALERT_TOPIC_ARN, Subject=subject,
                                   Message=json.dumps(message))
            break
        except ClientError as e:
            if e.response.get('Error', {}).get('Code') == 'AuthorizationError' and delays:
                delay = delays.pop(0)
                logger.warning(f"Alert to {ALERT_TOPIC_ARN} refused ({e}); retrying in {delay}s")
                time.sleep(delay)
                continue
            failed(e)
        except Exception as e:
            failed(e)
    logger.info(f"Alert published to {ALERT_TOPIC_ARN}: MessageId {response['MessageId']}")

def failed(error):
    # Failing the invocation counts it in the function's Errors metric, whose alarm is how
    # someone hears that alerts are not going out.
    logger.error(f"Alert not published to {ALERT_TOPIC_ARN}: {error}")
    raise error

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

    if alert_level == "HIGH" and ALERT_TOPIC_ARN:
        publish_alert(device_name, temperature, alert_level, timestamp)

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
