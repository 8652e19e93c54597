// islrun's own test script: a DLL loaded, called with values and Ref arguments (a variable
// and a whole array), freed; a DLL the workstation does not have gives handle 0.
var gDll : N12

Event Inq : 1
    var status : N9
    var message : A40
    var plu[3] : N9
    DLLLoad gDll, "..\bin\Promo.dll"
    If gDll = 0
        ExitWithError "Unable to load Promo.dll"
    EndIf
    DLLCall_CDecl gDll, Validate("QR-1", 3, Ref status, Ref plu[], Ref message)
    InfoMessage status, message
    InfoMessage plu[1], plu[3]
    DLLCall gDll, Ping()
    DLLFree gDll
EndEvent

Event Inq : 2
    var handle : N12
    DLLLoad handle, "Nowhere.dll"
    InfoMessage "handle", handle
EndEvent
