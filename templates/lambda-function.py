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
