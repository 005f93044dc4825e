print("resnet: coming")
