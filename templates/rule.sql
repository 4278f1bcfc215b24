SELECT *, topic(3) as device, timestamp() as aws_timestamp FROM 'sensor/temperature/+'
