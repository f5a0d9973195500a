#!/bin/sh
echo "hello from $(cat /app/data/greeting)"
