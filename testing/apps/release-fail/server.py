print("never released")
