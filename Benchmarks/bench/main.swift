print("bench: coming")
