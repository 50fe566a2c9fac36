"""The steps: split, train, forecast, clean, and mm run that chains them; what they share is in common."""
