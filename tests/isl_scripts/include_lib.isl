// included by include_main.isl
var gGreeting : A20 = "Hello"

Sub Greet
    gGreeting = "Hello again"
EndSub
